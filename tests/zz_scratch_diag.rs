use amortize::diagnostics::*;
use amortize::rng::{streams, PhiloxStream};
fn normals(n: usize, dim: usize, shift: f32, seed: u64) -> Vec<f32> {
    let mut rng = PhiloxStream::new(seed, streams::TEST, 0);
    let mut v = vec![0.0f32; n * dim];
    rng.fill_normal(0.0, 1.0, &mut v);
    for r in v.chunks_mut(dim) { r[0] += shift; }
    v
}
#[test]
fn scratch() {
    let cfg = MmdConfig { bandwidth: Some(1.5), ..MmdConfig::default() };
    let mut nulls = vec![]; let mut alts = vec![];
    for s in 0..20 {
        let x = normals(2000, 2, 0.0, 100 + s);
        nulls.push(mmd2_with(&x, &normals(2000, 2, 0.0, 200 + s), 2, &cfg).unwrap().mmd2);
        alts.push(mmd2_with(&x, &normals(2000, 2, 1.0, 300 + s), 2, &cfg).unwrap().mmd2);
    }
    let sd = |v: &[f64]| { let m = v.iter().sum::<f64>()/v.len() as f64; (m, (v.iter().map(|a| (a-m).powi(2)).sum::<f64>()/(v.len()-1) as f64).sqrt()) };
    println!("null {:?} alt {:?}", sd(&nulls), sd(&alts));
    let mut accs = vec![];
    for s in 0..5 {
        let r = c2st_with(&normals(1000, 2, 0.0, 10 + s), &normals(1000, 2, 0.0, 20 + s), 2, &C2stConfig::default()).unwrap();
        println!("null c2st {r:?}");
        accs.push(r.accuracy);
        let r = c2st_with(&normals(2000, 1, 0.0, 30 + s), &normals(2000, 1, 1.0, 40 + s), 1, &C2stConfig::default()).unwrap();
        println!("bayes c2st {r:?}");
    }
    for d in [2usize, 10] {
        let t = std::time::Instant::now();
        let r = c2st_with(&normals(10000, d, 0.0, 1), &normals(10000, d, 0.1, 2), d, &C2stConfig::default()).unwrap();
        println!("10k d{d}: {r:?} {:?}", t.elapsed());
        let t = std::time::Instant::now();
        let r = mmd2_with(&normals(10000, d, 0.0, 1), &normals(10000, d, 0.1, 2), d, &MmdConfig::default()).unwrap();
        println!("mmd 10k d{d}: {r:?} {:?}", t.elapsed());
    }
}
