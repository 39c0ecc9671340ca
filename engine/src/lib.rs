pub fn _e(){}
