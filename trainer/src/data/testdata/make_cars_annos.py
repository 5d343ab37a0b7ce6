"""Writes the two Cars196-like fixtures the data tests read (run with scipy installed).

cars_annos_utf8_raw.mat: scipy's own writer (char data as miUTF8), uncompressed, class as uint8.
cars_annos_u16_z.mat: char data as miUINT16 (what the MAT format also allows), compressed,
class as double. Both hold 6 annotations (classes 1, 99, 98, 196, 1, 150) and 196 class names.
"""
import numpy as np
import scipy.io as sio
import scipy.io.matlab._mio5 as m5
from scipy.io.matlab._mio5_params import mxCHAR_CLASS, miUINT16
from scipy.io.matlab._miobase import arr_to_chars

FIELDS = [('relative_im_path', 'O'), ('bbox_x1', 'O'), ('bbox_y1', 'O'), ('bbox_x2', 'O'),
          ('bbox_y2', 'O'), ('class', 'O'), ('test', 'O')]
ROWS = [('car_ims/000001.png', 1), ('car_ims/000002.png', 99), ('car_ims/000003.png', 98),
        ('car_ims/000004.png', 196), ('car_ims/000005.png', 1), ('car_ims/000006.png', 150)]
NAMES = ['AM General Hummer SUV 2000'] + ['class %d' % i for i in range(2, 197)]


def build(class_dtype):
    a = np.zeros((1, len(ROWS)), dtype=FIELDS)
    for i, (p, c) in enumerate(ROWS):
        a[0, i] = (p, np.uint16(1), np.uint16(2), np.uint16(30), np.uint16(40), class_dtype(c),
                   np.uint8(i % 2))
    n = np.empty((1, len(NAMES)), dtype=object)
    for i, s in enumerate(NAMES):
        n[0, i] = s
    return {'annotations': a, 'class_names': n}


def write_char_u16(self, arr, codec='ascii'):
    arr = arr_to_chars(arr)
    self.write_header(arr.shape, mxCHAR_CLASS)
    self.write_element(np.array([ord(c) for c in arr.T.ravel()], dtype=np.uint16), mdtype=miUINT16)


sio.savemat('cars_annos_utf8_raw.mat', build(np.uint8), do_compression=False)
m5.VarWriter5.write_char = write_char_u16
sio.savemat('cars_annos_u16_z.mat', build(np.float64), do_compression=True)
for f in ['cars_annos_utf8_raw.mat', 'cars_annos_u16_z.mat']:
    m = sio.loadmat(f)
    assert [int(x['class'][0, 0]) for x in m['annotations'][0]] == [c for _, c in ROWS]
