//! The price catalog (`stdlib/prices.json` through `chimera_compiler::prices`).

use chimera_compiler::prices::{HOURS_PER_MONTH, prices};
use chimera_model::ProviderName;

#[test]
fn embedded_prices_parse() {
    let p = prices();
    assert_eq!(p.currency(), "USD");
    assert_eq!(
        p.instance_hourly(ProviderName::Aws, "us-east-1", "t3.micro"),
        Some(0.0104)
    );
    assert_eq!(HOURS_PER_MONTH, chimera_compiler::catalog::HOURS_PER_MONTH);
}
