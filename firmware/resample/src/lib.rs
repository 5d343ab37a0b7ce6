//! The filter taps of a triangle-filter resize, computed exactly as `image` 0.25's
//! `imageops::resize` computes them (`vertical_sample` / `horizontal_sample`). One copy for the
//! device's CPU preprocessing (`bundle`) and the GPU frame kernel (`infer`), which must agree
//! bit for bit; neither crate may depend on the other.

/// The taps of one axis, for the output samples `first..first + count` of a resize from `n_src`
/// to `n_dst` samples.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Taps {
    /// First source sample of each output sample.
    pub left: Vec<u32>,
    /// `weights[start[k]..start[k + 1]]` are output sample k's weights, normalised.
    pub start: Vec<u32>,
    pub weights: Vec<f32>,
}

impl Taps {
    pub fn new(n_src: u32, n_dst: u32, first: u32, count: u32) -> Self {
        let support = 1.0f32; // FilterType::Triangle
        let ratio = n_src as f32 / n_dst as f32;
        let sratio = if ratio < 1.0 { 1.0 } else { ratio };
        let src_support = support * sratio;
        let mut taps = Taps {
            left: Vec::with_capacity(count as usize),
            start: Vec::with_capacity(count as usize + 1),
            weights: Vec::new(),
        };
        taps.start.push(0);
        for out in first..first + count {
            let input = (out as f32 + 0.5) * ratio;
            let left = ((input - src_support).floor() as i64).clamp(0, i64::from(n_src) - 1);
            let right = ((input + src_support).ceil() as i64).clamp(left + 1, i64::from(n_src));
            let input = input - 0.5;
            let from = taps.weights.len();
            let mut sum = 0.0f32;
            for i in left..right {
                let w = triangle((i as f32 - input) / sratio);
                taps.weights.push(w);
                sum += w;
            }
            for w in &mut taps.weights[from..] {
                *w /= sum;
            }
            taps.left.push(left as u32);
            taps.start.push(taps.weights.len() as u32);
        }
        taps
    }

    /// Output sample `k`'s first source sample and weights (`k` counts from `first`).
    pub fn get(&self, k: usize) -> (usize, &[f32]) {
        (
            self.left[k] as usize,
            &self.weights[self.start[k] as usize..self.start[k + 1] as usize],
        )
    }
}

fn triangle(x: f32) -> f32 {
    if x.abs() < 1.0 { 1.0 - x.abs() } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_taps_pick_one_sample_with_weight_one() {
        // A resize to the same size must copy: image copies the image, the kernel must too.
        let t = Taps::new(7, 7, 0, 7);
        for k in 0..7 {
            let (left, w) = t.get(k);
            let picked: Vec<usize> = w
                .iter()
                .enumerate()
                .filter(|(_, w)| **w != 0.0)
                .map(|(i, w)| {
                    assert_eq!(*w, 1.0);
                    left + i
                })
                .collect();
            assert_eq!(picked, [k]);
        }
    }

    #[test]
    fn weights_are_normalised_and_in_range() {
        for (src, dst) in [(41, 10), (10, 41), (640, 256), (3, 1), (1, 5)] {
            let t = Taps::new(src, dst, 0, dst);
            for k in 0..dst as usize {
                let (left, w) = t.get(k);
                assert!(!w.is_empty());
                assert!(
                    (w.iter().sum::<f32>() - 1.0).abs() < 1e-5,
                    "{src}->{dst} {k}"
                );
                assert!(left + w.len() <= src as usize);
            }
        }
    }
}
