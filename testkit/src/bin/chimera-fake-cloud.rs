//! `chimera-fake-cloud gcp|azure --port N`: the in-repo fakes of the GCP Compute REST API and
//! of Azure Resource Manager, served on 127.0.0.1 so a user can run the multicloud example with
//! no account. Each cloud's fake owns its argument parsing.

fn main() {
    let mut args = std::env::args().skip(1);
    let code = match args.next().as_deref() {
        Some("gcp") => chimera_testkit::fake_gcp::main(args.collect()),
        Some("azure") => chimera_testkit::fake_azure::main(args.collect()),
        _ => {
            eprintln!("usage: chimera-fake-cloud gcp|azure [--port N] [options]");
            2
        }
    };
    std::process::exit(code);
}
