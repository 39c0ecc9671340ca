pub mod cloud;
pub mod serve;
