//! The site's steps, one file each, in pipeline order (see the module
//! above): `acme` (HTTP-01 tokens, before anything else), `waf`, then (after the proxy decision and routing) `auth`,
//! `limit`, `content`, and `encode` for every locally made response;
//! `errors` is how any of them answers with an error.
//! Each is an `impl Site` block over the request context `Ctx`.

mod acme;
mod auth;
mod content;
mod encode;
mod errors;
mod limit;
mod waf;

pub(super) use self::content::static_response;
