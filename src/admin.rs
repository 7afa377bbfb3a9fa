//! perfproxy's own endpoints and the documents they answer, read from the
//! whole [`Shared`](crate::shared::state::Shared): [`endpoints`] (`/health`,
//! `/performance`, `/metrics`, the dashboard, who may ask), [`performance`]
//! (the JSON document), [`figures`] (one set of requests' figures in it),
//! [`prometheus`] (the exposition formats), [`history_query`]
//! (`/performance/history`), [`cluster_view`] (the document merged over the
//! cluster).

pub(crate) mod cluster_view;
pub(crate) mod endpoints;
pub(crate) mod figures;
pub(crate) mod history_query;
pub(crate) mod performance;
pub(crate) mod prometheus;
