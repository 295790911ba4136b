//! The set encoders (deep set, set transformer, causal transformer) and the op they added
//! (`masked_softmax`): padding and permutation invariance, causal-mask correctness,
//! finite-difference gradients, and clear errors on bad input. Seeded and small.

mod common;

use amortize::backend::{Reduction, UnaryOp};
use amortize::nn::{
    CausalTransformer, DeepSet, DeepSetConfig, MultiHeadAttention, SetTransformer,
    TransformerConfig,
};
use amortize::rng::{streams, PhiloxStream};
use amortize::{ops, Error, ParamStore, Result, Tape, Tensor};
use common::{grad_check, max_rel_err, randn};

const F: usize = 3;
const OUT: usize = 4;
const TOL: f32 = 1e-5;

// ---------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------

/// `count` sets of the given sizes, each element F standard-normal features.
fn random_sets(sizes: &[usize], seed: u64) -> Vec<Vec<Vec<f32>>> {
    let mut rng = PhiloxStream::new(seed, streams::TEST, 2);
    sizes
        .iter()
        .map(|&n| {
            (0..n)
                .map(|_| (0..F).map(|_| rng.normal()).collect())
                .collect()
        })
        .collect()
}

/// Packs sets into x `[B, len, F]` and a mask. With `scatter_seed`, the real elements go to
/// random positions (in their order) and the padding holds random garbage; without it,
/// they are packed at the front and the padding is zero.
fn pack(sets: &[Vec<Vec<f32>>], len: usize, scatter_seed: Option<u64>) -> (Tensor, Tensor) {
    let b = sets.len();
    let mut x = vec![0.0f32; b * len * F];
    let mut mask = vec![0.0f32; b * len];
    let mut rng = PhiloxStream::new(scatter_seed.unwrap_or(0), streams::TEST, 3);
    for (i, set) in sets.iter().enumerate() {
        assert!(set.len() <= len);
        let positions: Vec<usize> = match scatter_seed {
            None => (0..set.len()).collect(),
            Some(_) => {
                let mut all: Vec<usize> = (0..len).collect();
                rng.shuffle(&mut all);
                let mut p = all[..set.len()].to_vec();
                p.sort_unstable();
                p
            }
        };
        if scatter_seed.is_some() {
            for v in &mut x[i * len * F..(i + 1) * len * F] {
                *v = 5.0 * rng.normal();
            }
        }
        for (e, &p) in set.iter().zip(&positions) {
            x[(i * len + p) * F..(i * len + p + 1) * F].copy_from_slice(e);
            mask[i * len + p] = 1.0;
        }
    }
    (
        Tensor::from_vec(x, &[b, len, F]).unwrap(),
        Tensor::from_vec(mask, &[b, len]).unwrap(),
    )
}

/// The encoders under test, behind one interface.
enum Encoder {
    Deep(Box<DeepSet>),
    Set(Box<SetTransformer>),
    Causal(Box<CausalTransformer>),
}

impl Encoder {
    fn forward(&self, store: &ParamStore, x: &Tensor, mask: &Tensor) -> Result<Vec<f32>> {
        let mut tape = Tape::no_grad();
        let xv = tape.constant(x.clone());
        let y = match self {
            Encoder::Deep(m) => m.forward(&mut tape, store, xv, mask)?,
            Encoder::Set(m) => m.forward(&mut tape, store, xv, mask)?,
            Encoder::Causal(m) => m.forward(&mut tape, store, xv, mask)?,
        };
        tape.value(y).to_vec()
    }
}

fn small_transformer_config() -> TransformerConfig {
    TransformerConfig {
        width: 16,
        heads: 4,
        ff_width: 24,
        blocks: 2,
        seeds: 2,
        ..TransformerConfig::new(F, OUT)
    }
}

/// Every encoder, with fresh seeded parameters.
fn encoders() -> Vec<(&'static str, Encoder, ParamStore)> {
    let mut out = Vec::new();
    for (name, pooling) in [
        ("deep set (mean)", Reduction::Mean),
        ("deep set (sum)", Reduction::Sum),
    ] {
        let mut store = ParamStore::new();
        let mut rng = PhiloxStream::new(1, streams::INIT, 0);
        let config = DeepSetConfig {
            width: 16,
            embedding: 8,
            pooling,
            ..DeepSetConfig::new(F, OUT)
        };
        let m = DeepSet::new(&mut store, "ds", config, &mut rng).unwrap();
        out.push((name, Encoder::Deep(Box::new(m)), store));
    }
    let mut store = ParamStore::new();
    let mut rng = PhiloxStream::new(2, streams::INIT, 0);
    let m = SetTransformer::new(&mut store, "st", small_transformer_config(), &mut rng).unwrap();
    out.push(("set transformer", Encoder::Set(Box::new(m)), store));
    let mut store = ParamStore::new();
    let mut rng = PhiloxStream::new(3, streams::INIT, 0);
    let m = CausalTransformer::new(&mut store, "ct", small_transformer_config(), &mut rng).unwrap();
    out.push(("causal transformer", Encoder::Causal(Box::new(m)), store));
    out
}

/// The causal transformer's outputs at the real positions of each set, in order.
fn real_positions(y: &[f32], mask: &Tensor) -> Vec<f32> {
    let m = mask.to_vec().unwrap();
    m.iter()
        .enumerate()
        .filter(|(_, &v)| v == 1.0)
        .flat_map(|(p, _)| y[p * OUT..(p + 1) * OUT].to_vec())
        .collect()
}

fn assert_close(name: &str, what: &str, a: &[f32], b: &[f32]) {
    let err = max_rel_err(a, b);
    assert!(err <= TOL, "{name}: {what}: max rel error {err}");
}

// ---------------------------------------------------------------------------------------
// invariances
// ---------------------------------------------------------------------------------------

#[test]
fn padding_does_not_change_the_output() {
    let sizes = [5, 1, 9, 3];
    let sets = random_sets(&sizes, 10);
    let tight = pack(&sets, 9, None);
    let loose = pack(&sets, 17, Some(11));
    let looser = pack(&sets, 30, Some(12));
    for (name, enc, store) in encoders() {
        let y0 = enc.forward(&store, &tight.0, &tight.1).unwrap();
        for (x, mask) in [&loose, &looser] {
            let y = enc.forward(&store, x, mask).unwrap();
            if let Encoder::Causal(_) = enc {
                let want = real_positions(&y0, &tight.1);
                let got = real_positions(&y, mask);
                assert_close(name, "outputs at real positions", &got, &want);
                // Padded positions read 0.
                let m = mask.to_vec().unwrap();
                for (p, &v) in m.iter().enumerate() {
                    if v == 0.0 {
                        assert!(y[p * OUT..(p + 1) * OUT].iter().all(|&o| o == 0.0));
                    }
                }
            } else {
                assert_eq!(y.len(), sizes.len() * OUT);
                assert_close(name, "padded vs tight", &y, &y0);
            }
        }
        // Each set alone (no padding, batch of one) gives its row of the batch.
        for (i, set) in sets.iter().enumerate() {
            let (x, mask) = pack(std::slice::from_ref(set), set.len(), None);
            let y = enc.forward(&store, &x, &mask).unwrap();
            let row = match enc {
                Encoder::Causal(_) => {
                    let per_set: Vec<f32> = real_positions(&y0, &tight.1);
                    let start: usize = sizes[..i].iter().sum::<usize>() * OUT;
                    per_set[start..start + set.len() * OUT].to_vec()
                }
                _ => y0[i * OUT..(i + 1) * OUT].to_vec(),
            };
            assert_close(name, &format!("set {i} alone"), &y, &row);
        }
    }
}

#[test]
fn pooling_encoders_are_permutation_invariant() {
    let sizes = [7, 4, 12];
    let sets = random_sets(&sizes, 20);
    let (x, mask) = pack(&sets, 14, Some(21));
    let mut rng = PhiloxStream::new(22, streams::TEST, 4);
    let shuffled: Vec<Vec<Vec<f32>>> = sets
        .iter()
        .map(|s| {
            let mut s = s.clone();
            rng.shuffle(&mut s);
            s
        })
        .collect();
    assert_ne!(shuffled, sets, "the shuffle must move something");
    let (xp, maskp) = pack(&shuffled, 14, Some(23));
    for (name, enc, store) in encoders() {
        let y = enc.forward(&store, &x, &mask).unwrap();
        let yp = enc.forward(&store, &xp, &maskp).unwrap();
        match enc {
            // Causal outputs depend on the order of the events (through which prefix each
            // earlier element saw); that is what the causal test covers.
            Encoder::Causal(_) => {}
            _ => assert_close(name, "permuted set", &yp, &y),
        }
    }
}

#[test]
fn causal_outputs_depend_only_on_earlier_elements() {
    let sizes = [10, 6];
    let sets = random_sets(&sizes, 30);
    let (name, enc, store) = encoders().pop().unwrap();
    assert!(matches!(enc, Encoder::Causal(_)));
    let (x, mask) = pack(&sets, 12, Some(31));
    let y0 = real_positions(&enc.forward(&store, &x, &mask).unwrap(), &mask);
    for k in [0, 2, 5] {
        // Replace every element after the k-th of each set.
        let fresh = random_sets(&sizes, 100 + k as u64);
        let changed: Vec<Vec<Vec<f32>>> = sets
            .iter()
            .zip(&fresh)
            .map(|(s, f)| s[..=k].iter().chain(&f[k + 1..]).cloned().collect())
            .collect();
        let (xc, maskc) = pack(&changed, 12, Some(31));
        let y = real_positions(&enc.forward(&store, &xc, &maskc).unwrap(), &maskc);
        let mut start = 0;
        for &n in &sizes {
            let (a, b) = (&y[start * OUT..], &y0[start * OUT..]);
            let prefix = (k + 1) * OUT;
            assert_close(
                name,
                &format!("outputs 0..={k}"),
                &a[..prefix],
                &b[..prefix],
            );
            if k + 1 < n {
                let later = max_rel_err(&a[prefix..n * OUT], &b[prefix..n * OUT]);
                assert!(
                    later > 1e-3,
                    "{name}: outputs after {k} should change, moved {later}"
                );
            }
            start += n;
        }
        // Output k is the encoder run on the first k + 1 elements alone.
        let prefix_sets: Vec<Vec<Vec<f32>>> = sets.iter().map(|s| s[..=k].to_vec()).collect();
        let (xk, maskk) = pack(&prefix_sets, k + 1, None);
        let yk = enc.forward(&store, &xk, &maskk).unwrap();
        let mut start = 0;
        for (i, &n) in sizes.iter().enumerate() {
            let got = &y0[(start + k) * OUT..(start + k + 1) * OUT];
            let want = &yk[(i * (k + 1) + k) * OUT..(i * (k + 1) + k + 1) * OUT];
            assert_close(name, &format!("output {k} vs prefix alone"), got, want);
            start += n;
        }
    }
}

// ---------------------------------------------------------------------------------------
// masked_softmax: semantics and gradient
// ---------------------------------------------------------------------------------------

#[test]
fn masked_softmax_matches_softmax_over_visible_keys() {
    let (b, q, k) = (2, 5, 5);
    let x = randn(&[b, q, k], 40);
    let mask = Tensor::from_vec(vec![1., 0., 1., 1., 0., 0., 0., 1., 0., 1.], &[b, k]).unwrap();
    let xs = x.to_vec().unwrap();
    let ms = mask.to_vec().unwrap();
    for causal in [false, true] {
        let y = ops::masked_softmax(&x, &mask, causal)
            .unwrap()
            .to_vec()
            .unwrap();
        for bi in 0..b {
            for i in 0..q {
                let row = (bi * q + i) * k;
                let vis: Vec<usize> = (0..k)
                    .filter(|&j| ms[bi * k + j] == 1.0 && (!causal || j <= i))
                    .collect();
                if vis.is_empty() {
                    assert!(y[row..row + k].iter().all(|&v| v == 0.0), "empty row is 0");
                    continue;
                }
                let sub: Vec<f32> = vis.iter().map(|&j| xs[row + j]).collect();
                let want = ops::softmax(&Tensor::from_vec(sub, &[vis.len()]).unwrap())
                    .unwrap()
                    .to_vec()
                    .unwrap();
                for j in 0..k {
                    let expect = vis.iter().position(|&v| v == j).map_or(0.0, |p| want[p]);
                    assert!(
                        (y[row + j] - expect).abs() < 1e-6,
                        "causal={causal} ({bi},{i},{j})"
                    );
                }
            }
        }
    }
    // Hidden keys may hold anything, even infinities.
    let mut xs_inf = xs.clone();
    xs_inf[1] = f32::INFINITY;
    let xi = Tensor::from_vec(xs_inf, &[b, q, k]).unwrap();
    let y = ops::masked_softmax(&xi, &mask, false)
        .unwrap()
        .to_vec()
        .unwrap();
    assert!(y.iter().all(|v| v.is_finite()));
}

#[test]
fn masked_softmax_shape_errors() {
    let x = randn(&[2, 3, 4], 41);
    let bad_mask = Tensor::full(&[2, 3], 1.0);
    let e = ops::masked_softmax(&x, &bad_mask, false).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    let mask = Tensor::full(&[2, 4], 1.0);
    let e = ops::masked_softmax(&x, &mask, true).unwrap_err();
    assert!(e.to_string().contains("causal"), "{e}");
    let e = ops::masked_softmax(&randn(&[3, 4], 42), &mask, false).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
}

/// Elements checked per input (evenly spread), to keep the test fast.
const MAX_CHECKED: usize = 64;

#[test]
fn masked_softmax_gradient() {
    // Set 1 hides its first two keys, so causal rows 0 and 1 see nothing (zero rows).
    let mask = Tensor::from_vec(vec![1., 1., 0., 1., 1., 0., 0., 1., 1., 1.], &[2, 5]).unwrap();
    for causal in [false, true] {
        grad_check(
            &format!("masked_softmax causal={causal}"),
            &[randn(&[2, 5, 5], 50)],
            MAX_CHECKED,
            |t, v| t.masked_softmax(v[0], &mask, causal),
        );
    }
    let rect = Tensor::from_vec(vec![0., 1., 1., 1., 1., 0., 1., 0.], &[2, 4]).unwrap();
    grad_check(
        "masked_softmax [2,3,4]",
        &[randn(&[2, 3, 4], 51)],
        MAX_CHECKED,
        |t, v| t.masked_softmax(v[0], &rect, false),
    );
}

#[test]
fn attention_gradient_through_heads() {
    let mut store = ParamStore::new();
    let mut rng = PhiloxStream::new(5, streams::INIT, 0);
    let mha = MultiHeadAttention::new(&mut store, "mha", 8, 2, &mut rng).unwrap();
    let mask = Tensor::from_vec(vec![1., 1., 0., 1., 1., 1., 1., 0.], &[2, 4]).unwrap();
    for causal in [false, true] {
        grad_check(
            &format!("attention causal={causal}"),
            &[randn(&[2, 4, 8], 52), randn(&[2, 4, 8], 53)],
            MAX_CHECKED,
            |t, v| mha.forward(t, &store, v[0], v[1], &mask, causal),
        );
    }
}

#[test]
fn every_parameter_gets_a_gradient() {
    let sets = random_sets(&[4, 2, 6], 60);
    let (x, mask) = pack(&sets, 8, Some(61));
    for (name, enc, store) in encoders() {
        let mut tape = Tape::new();
        let xv = tape.leaf(x.clone());
        let y = match &enc {
            Encoder::Deep(m) => m.forward(&mut tape, &store, xv, &mask),
            Encoder::Set(m) => m.forward(&mut tape, &store, xv, &mask),
            Encoder::Causal(m) => m.forward(&mut tape, &store, xv, &mask),
        }
        .unwrap();
        let loss = tape.reduce_all(y, Reduction::Sum).unwrap();
        let grads = tape.backward(loss).unwrap();
        let pg = grads.param_grads().unwrap();
        for (id, pname, _) in store.iter() {
            let g = pg
                .get(id)
                .unwrap_or_else(|| panic!("{name}: {pname} has no gradient"));
            let g = g.to_vec().unwrap();
            assert!(g.iter().all(|v| v.is_finite()), "{name}: {pname}");
            assert!(
                g.iter().any(|&v| v != 0.0),
                "{name}: {pname} gradient is all zero"
            );
        }
        // Padded elements get no gradient.
        let dx = grads.get(xv).unwrap().to_vec().unwrap();
        let m = mask.to_vec().unwrap();
        for (p, &v) in m.iter().enumerate() {
            if v == 0.0 {
                assert!(dx[p * F..(p + 1) * F].iter().all(|&g| g == 0.0), "{name}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// bad input
// ---------------------------------------------------------------------------------------

fn expect_error(enc: &Encoder, store: &ParamStore, x: &Tensor, mask: &Tensor, words: &[&str]) {
    let e = enc.forward(store, x, mask).unwrap_err().to_string();
    for w in words {
        assert!(e.contains(w), "error {e:?} should mention {w:?}");
    }
}

#[test]
fn bad_input_gives_clear_errors() {
    let sets = random_sets(&[3, 2], 70);
    let (x, mask) = pack(&sets, 4, None);
    for (name, enc, store) in encoders() {
        assert!(enc.forward(&store, &x, &mask).is_ok(), "{name}");
        // An empty set.
        let mut m = mask.to_vec().unwrap();
        m[4..8].fill(0.0);
        let empty = Tensor::from_vec(m, &[2, 4]).unwrap();
        expect_error(&enc, &store, &x, &empty, &["set 1 is empty", "all zero"]);
        // Wrong feature count.
        let wide = randn(&[2, 4, F + 1], 71);
        expect_error(&enc, &store, &wide, &mask, &["3 features", "got 4"]);
        // Mask of the wrong shape.
        expect_error(&enc, &store, &x, &Tensor::full(&[2, 5], 1.0), &["mask"]);
        // Not a set batch at all.
        expect_error(
            &enc,
            &store,
            &randn(&[8, F], 72),
            &mask,
            &["[batch, set, feat]"],
        );
        // A mask that is not 0/1.
        let mut m = mask.to_vec().unwrap();
        m[1] = 0.5;
        let half = Tensor::from_vec(m, &[2, 4]).unwrap();
        expect_error(
            &enc,
            &store,
            &x,
            &half,
            &["mask[0, 1] = 0.5", "0 (padding) or 1"],
        );
        // NaN in a real element, then in padding.
        let mut xs = x.to_vec().unwrap();
        xs[(4 + 1) * F + 2] = f32::NAN;
        let nan = Tensor::from_vec(xs, &[2, 4, F]).unwrap();
        expect_error(
            &enc,
            &store,
            &nan,
            &mask,
            &["x[1, 1, 2] = NaN", "set element"],
        );
        let mut xs = x.to_vec().unwrap();
        xs[3 * F] = f32::INFINITY;
        let inf = Tensor::from_vec(xs, &[2, 4, F]).unwrap();
        expect_error(
            &enc,
            &store,
            &inf,
            &mask,
            &["x[0, 3, 0] = inf", "padded element"],
        );
    }
}

#[test]
fn bad_configurations_are_rejected() {
    let mut store = ParamStore::new();
    let mut rng = PhiloxStream::new(0, streams::INIT, 0);
    let e = MultiHeadAttention::new(&mut store, "a", 10, 3, &mut rng).unwrap_err();
    assert!(e.to_string().contains("multiple of heads"), "{e}");
    let config = TransformerConfig {
        seeds: 0,
        ..TransformerConfig::new(F, OUT)
    };
    let e = SetTransformer::new(&mut store, "st", config, &mut rng).unwrap_err();
    assert!(e.to_string().contains("seed"), "{e}");
    let config = DeepSetConfig {
        phi_layers: 0,
        activation: UnaryOp::Relu,
        ..DeepSetConfig::new(F, OUT)
    };
    assert!(DeepSet::new(&mut store, "ds", config, &mut rng).is_err());
}
