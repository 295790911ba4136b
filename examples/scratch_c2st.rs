// scratch, not committed: C2ST between two .npy files
fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let (x, _, d) = amortize::io::npy::read_npy_matrix(&a[0], None).unwrap();
    let (y, _, _) = amortize::io::npy::read_npy_matrix(&a[1], Some(d)).unwrap();
    println!(
        "{:.3}",
        amortize::diagnostics::c2st::c2st(&x, &y, d).unwrap()
    );
}
