//! What the benches of the cloud providers on their in-repo fakes share (gcp.rs, azure.rs): the
//! command line, the fleet, and the table of medians at parallelism 1 and 16.

use super::median;

/// `N RUNS` from the command line: instances (default 200) and runs per cell (default 3).
pub fn args() -> (usize, usize) {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    (
        args.first().copied().unwrap_or(200),
        args.get(1).copied().unwrap_or(3),
    )
}

/// Stack `stack` on `provider` (`gcp`, `azure`): a network, a subnet and `n` small instances
/// (the bench gives the provider its settings itself).
pub fn fleet(provider: &str, stack: &str, n: usize) -> String {
    format!(
        r#"let c = import "chimera.ncl" in
let on = {{ provider = '{provider}, region = "us-east" }} in
let net = c.Network & on & {{ name = "main", cidr = "10.0.0.0/16" }} in
let sn = c.Subnet & on & {{ name = "workers", network = net, cidr = "10.0.0.0/20" }} in
{{ stack = "{stack}", resources = [net, sn] @ std.array.generate
  (fun i => c.Instance & on & {{ name = "w-%{{std.to_string i}}", size = 'small, subnet = sn.outputs.id }}) {n} }}
"#
    )
}

/// Prints the Markdown table: for each mode (`column` names what it varies), `runs` runs of
/// `once(mode, parallelism)` (seconds) at parallelism 1 and 16, their medians, and the
/// speed-up of 16 over 1.
pub fn table<M>(
    n: usize,
    runs: usize,
    column: &str,
    modes: &[(&str, M)],
    mut once: impl FnMut(&M, usize) -> f64,
) {
    println!("| instances | {column} | parallelism | apply median (s) | runs | p16 speed-up |");
    println!("|---:|---|---:|---:|---:|---:|");
    for (label, mode) in modes {
        let mut medians = Vec::new();
        for p in [1, 16] {
            let times: Vec<f64> = (0..runs).map(|_| once(mode, p)).collect();
            let m = median(times);
            medians.push(m);
            let speedup = if p == 16 {
                format!("{:.2}×", medians[0] / m)
            } else {
                String::new()
            };
            println!("| {n} | {label} | {p} | {m:.2} | {runs} | {speedup} |");
        }
    }
}
