//! The offline planner over the intent set (`agents/intents.json`): for each intent, the draft
//! is verified (compile, plan, price, policies) and checked against its expectation. Prints a
//! table and the shares that compile, pass policy and do what was asked, with the median time
//! per proposal (propose and verify apart). `cargo bench -p chimera-agents --bench planner`;
//! `-- FILTER --show` runs the cases whose id contains FILTER and prints their edits.

#[path = "../tests/planner_support/mod.rs"]
mod support;

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() {
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    // `--show`: print each draft's edits.
    let show = std::env::args().any(|a| a == "--show");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let cases: Vec<_> = support::cases()
        .into_iter()
        .filter(|c| filter.as_deref().is_none_or(|f| c.id.contains(f)))
        .collect();
    println!(
        "{:<30} {:<11} {:>8} {:>6} {:>6} {:>10} {:>10}",
        "case", "example", "compiles", "policy", "asked", "propose ms", "verify ms"
    );
    let (mut compiled, mut policy, mut asked, mut drafts) = (0, 0, 0, 0);
    let (mut refusals, mut refused_right) = (0, 0);
    let (mut propose, mut verify) = (Vec::new(), Vec::new());
    for c in &cases {
        let out = rt.block_on(support::run(c));
        let yes = |b: bool| if b { "yes" } else { "no" };
        if c.expect.unsupported {
            refusals += 1;
            refused_right += usize::from(out.as_asked());
            println!(
                "{:<30} {:<11} {:>8} {:>6} {:>6} {:>10.1} {:>10}",
                c.id,
                c.example,
                "-",
                "-",
                if out.as_asked() { "refused" } else { "NO" },
                out.propose.as_secs_f64() * 1e3,
                "-"
            );
            continue;
        }
        drafts += 1;
        compiled += usize::from(out.compiled());
        policy += usize::from(out.policy_ok());
        asked += usize::from(out.as_asked() && out.policy_ok());
        propose.push(out.propose.as_secs_f64() * 1e3);
        if out.verdict.is_some() {
            verify.push(out.verify.as_secs_f64() * 1e3);
        }
        println!(
            "{:<30} {:<11} {:>8} {:>6} {:>6} {:>10.1} {:>10.1}",
            c.id,
            c.example,
            yes(out.compiled()),
            yes(out.policy_ok()),
            yes(out.as_asked()),
            out.propose.as_secs_f64() * 1e3,
            out.verify.as_secs_f64() * 1e3
        );
        if show && let Ok(d) = &out.draft {
            for e in &d.edits {
                println!(
                    "    --- {}\n{}\n    +++\n{}",
                    e.file.display(),
                    e.old,
                    e.new
                );
            }
        }
        if let Some(gap) = &c.known_gap {
            println!("    known gap: {gap}");
        }
        for p in &out.problems {
            println!("    {p}");
        }
    }
    let pct = |n: usize| 100.0 * n as f64 / drafts.max(1) as f64;
    println!();
    println!("intents that should get a draft: {drafts}");
    println!(
        "  compile:                {compiled}/{drafts} ({:.0}%)",
        pct(compiled)
    );
    println!(
        "  pass policy:            {policy}/{drafts} ({:.0}%)",
        pct(policy)
    );
    println!(
        "  do what was asked:      {asked}/{drafts} ({:.0}%)",
        pct(asked)
    );
    println!("intents that should be refused: {refused_right}/{refusals} refused");
    println!(
        "median time per proposal: propose {:.1} ms, verify {:.1} ms",
        median(propose),
        median(verify)
    );
}
