//! The NormSoftmax loss and its gradients against a direct computation in f64, written here
//! from the formulas, with and without class subsampling.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use trainer::backend::device_from_env;
use trainer::burn::tensor::{Tensor, TensorData};
use trainer::loss::{ClassSubset, NormSoftmax};

struct Expected {
    loss: f64,
    grad_embeddings: Vec<f64>,
    grad_proxies: Vec<f64>,
}

/// L = -1/N sum_n log softmax(E W^T / T)[y_n] with W's rows normalised, over `classes` only.
#[allow(clippy::too_many_arguments)] // the formula's symbols, spelled out
fn reference(
    e: &[f64],
    w: &[f64],
    n: usize,
    c: usize,
    d: usize,
    t: f64,
    labels: &[usize],
    classes: &[usize],
) -> Expected {
    let norms: Vec<f64> = (0..c)
        .map(|k| {
            w[k * d..(k + 1) * d]
                .iter()
                .map(|x| x * x)
                .sum::<f64>()
                .sqrt()
        })
        .collect();
    let wn: Vec<f64> = (0..c * d).map(|i| w[i] / norms[i / d]).collect();
    let mut loss = 0.0;
    let mut grad_e = vec![0.0; n * d];
    let mut grad_wn = vec![0.0; c * d];
    for i in 0..n {
        let logits: Vec<f64> = classes
            .iter()
            .map(|&k| (0..d).map(|j| e[i * d + j] * wn[k * d + j]).sum::<f64>() / t)
            .collect();
        let max = logits.iter().copied().fold(f64::MIN, f64::max);
        let sum: f64 = logits.iter().map(|z| (z - max).exp()).sum();
        let target = classes
            .iter()
            .position(|&k| k == labels[i])
            .expect("label in subset");
        loss -= logits[target] - max - sum.ln();
        for (position, &k) in classes.iter().enumerate() {
            let p = (logits[position] - max).exp() / sum;
            let dz = (p - if position == target { 1.0 } else { 0.0 }) / n as f64;
            for j in 0..d {
                grad_e[i * d + j] += dz * wn[k * d + j] / t;
                grad_wn[k * d + j] += dz * e[i * d + j] / t;
            }
        }
    }
    // Through the row normalisation: dW = (I - wn wn^T) dWn / |w|.
    let mut grad_w = vec![0.0; c * d];
    for k in 0..c {
        let dot: f64 = (0..d).map(|j| wn[k * d + j] * grad_wn[k * d + j]).sum();
        for j in 0..d {
            grad_w[k * d + j] = (grad_wn[k * d + j] - wn[k * d + j] * dot) / norms[k];
        }
    }
    Expected {
        loss: loss / n as f64,
        grad_embeddings: grad_e,
        grad_proxies: grad_w,
    }
}

fn to_vec(tensor: Tensor<2>) -> Vec<f64> {
    tensor
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect()
}

fn assert_close(what: &str, actual: &[f64], expected: &[f64]) {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths");
    for (index, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (a - e).abs() <= 1e-5 * (1.0 + e.abs()),
            "{what}[{index}]: {a} vs {e}"
        );
    }
}

fn check(fraction: Option<f64>) {
    let (n, c, d, t) = (6, 9, 16, 0.05);
    let mut rng = StdRng::seed_from_u64(7);
    let mut e: Vec<f64> = (0..n * d).map(|_| rng.random_range(-1.0..1.0)).collect();
    for row in e.chunks_mut(d) {
        let norm = row.iter().map(|x| x * x).sum::<f64>().sqrt();
        row.iter_mut().for_each(|x| *x /= norm);
    }
    let w: Vec<f64> = (0..c * d).map(|_| rng.random_range(-0.3..0.3)).collect();
    let labels = [0, 0, 3, 3, 7, 7];
    let subset = fraction.map(|f| ClassSubset::draw(&labels, c, f, &mut rng));
    let classes: Vec<usize> = subset
        .as_ref()
        .map_or((0..c).collect(), |s| s.classes.clone());

    let device = device_from_env().unwrap().autodiff();
    let as_f32 = |values: &[f64]| values.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    let embeddings =
        Tensor::<2>::from_data(TensorData::new(as_f32(&e), [n, d]), &device).require_grad();
    let proxies = Tensor::<2>::from_data(TensorData::new(as_f32(&w), [c, d]), &device);
    let criterion = NormSoftmax::from_proxies(proxies, t);
    let loss = criterion.forward(embeddings.clone(), &labels, subset.as_ref());
    let grads = loss.backward();

    // The reference sees the same f32-rounded inputs.
    let e32: Vec<f64> = as_f32(&e).into_iter().map(f64::from).collect();
    let w32: Vec<f64> = as_f32(&w).into_iter().map(f64::from).collect();
    let expected = reference(&e32, &w32, n, c, d, t, &labels, &classes);
    let loss_value = f64::from(loss.into_scalar::<f32>());
    assert!(
        (loss_value - expected.loss).abs() <= 1e-5 * (1.0 + expected.loss.abs()),
        "loss {loss_value} vs {}",
        expected.loss
    );
    assert_close(
        "dL/dE",
        &to_vec(embeddings.grad(&grads).unwrap()),
        &expected.grad_embeddings,
    );
    assert_close(
        "dL/dW",
        &to_vec(criterion.proxies.val().grad(&grads).unwrap()),
        &expected.grad_proxies,
    );
    if let Some(subset) = &subset {
        // Proxies outside the subset get no gradient at all.
        let grad = to_vec(criterion.proxies.val().grad(&grads).unwrap());
        for k in (0..c).filter(|k| !subset.classes.contains(k)) {
            assert!(
                grad[k * d..(k + 1) * d].iter().all(|&g| g == 0.0),
                "class {k} is outside the subset"
            );
        }
    }
}

#[test]
fn loss_and_gradients_match_the_formula() {
    check(None);
}

#[test]
fn subsampled_loss_and_gradients_match_the_formula() {
    check(Some(0.5));
}

#[test]
fn class_subset_holds_the_batch_classes_and_the_requested_share() {
    let mut rng = StdRng::seed_from_u64(1);
    let labels = [4, 4, 9, 17];
    let subset = ClassSubset::draw(&labels, 100, 0.1, &mut rng);
    assert_eq!(subset.classes.len(), 10);
    for label in labels {
        assert!(subset.classes.contains(&label));
    }
    let mut sorted = subset.classes.clone();
    sorted.dedup();
    assert_eq!(sorted, subset.classes, "sorted and distinct");
    // Never fewer than the batch's own classes, never more than all.
    assert_eq!(
        ClassSubset::draw(&labels, 100, 0.01, &mut rng).classes,
        vec![4, 9, 17]
    );
    assert_eq!(
        ClassSubset::draw(&labels, 20, 1.0, &mut rng).classes,
        (0..20).collect::<Vec<_>>()
    );
}
