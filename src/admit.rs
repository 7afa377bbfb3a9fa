//! Who a request is from and whether it may pass: [`access`] (CIDR lists,
//! the admin token), [`clients`] (`X-Forwarded-For` walked past trusted
//! proxies, the top clients) and [`limits`] (`[[rate_limits]]`).

pub(crate) mod access;
pub(crate) mod clients;
pub(crate) mod limits;
