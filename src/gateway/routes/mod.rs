//! The route table: every endpoint with its versions, access and status gate.

mod auth;
mod config;
mod manager;
mod root;

use super::router::{Access, Gate, Handler, Route, Router};
use warp::http::Method;

/// Wraps an `async fn(Arc<App>, Ctx)` as a table handler.
macro_rules! h {
    ($f:path) => {{
        let handler: Handler = |app, ctx| Box::pin($f(app, ctx));
        handler
    }};
}

fn r(
    method: Method,
    prefix: &'static str,
    path: &'static str,
    versions: &'static [u8],
    access: Access,
    gate: Gate,
    handler: Handler,
) -> Route {
    Route {
        method,
        prefix,
        path,
        versions,
        access,
        gate,
        handler,
    }
}

const ALL_V: &[u8] = &[1, 2, 3, 4];
const CONFIG_V: &[u8] = &[3, 4];
const MANAGER_V: &[u8] = &[2, 3, 4];
const ADMIN_V: &[u8] = &[2, 3, 4];

pub fn route_table() -> Router {
    use Access::*;
    use Gate::Any;
    Router::new(vec![
        r(Method::GET, "", "", &[], Public, Any, h!(root::hello)),
        r(
            Method::GET,
            "",
            "/metrics",
            &[],
            Public,
            Any,
            h!(root::metrics),
        ),
        r(Method::GET, "auth", "", ALL_V, User, Any, h!(auth::echo)),
        r(Method::POST, "auth", "", ALL_V, User, Any, h!(auth::echo)),
        r(
            Method::GET,
            "auth",
            "/test",
            ALL_V,
            User,
            Any,
            h!(auth::echo),
        ),
        r(
            Method::POST,
            "auth",
            "/test",
            ALL_V,
            User,
            Any,
            h!(auth::echo),
        ),
        r(
            Method::POST,
            "auth",
            "/authorize",
            ALL_V,
            Public,
            Any,
            h!(auth::authorize),
        ),
        r(
            Method::GET,
            "manager",
            "/status",
            MANAGER_V,
            Public,
            Any,
            h!(manager::get_status),
        ),
        r(
            Method::PUT,
            "manager",
            "/status",
            MANAGER_V,
            Admin,
            Any,
            h!(manager::put_status),
        ),
        r(
            Method::GET,
            "config",
            "/resource-slots",
            CONFIG_V,
            Public,
            Any,
            h!(config::resource_slots),
        ),
        r(
            Method::POST,
            "config",
            "/get",
            CONFIG_V,
            Admin,
            Any,
            h!(config::get),
        ),
        r(
            Method::POST,
            "config",
            "/set",
            CONFIG_V,
            Admin,
            Any,
            h!(config::set),
        ),
        r(
            Method::POST,
            "config",
            "/delete",
            CONFIG_V,
            Admin,
            Any,
            h!(config::delete),
        ),
        r(
            Method::POST,
            "admin",
            "/graphql",
            ADMIN_V,
            User,
            Gate::Read,
            h!(crate::gateway::graphql::handle),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::router::Lookup;

    #[test]
    fn table_builds_with_legacy_twins_and_tells_404_from_405() {
        let t = route_table();
        assert!(matches!(
            t.lookup(&Method::GET, "/auth"),
            Lookup::Found { legacy: None, .. }
        ));
        assert!(matches!(
            t.lookup(&Method::POST, "/v1/auth/"),
            Lookup::Found {
                legacy: Some(1),
                ..
            }
        ));
        assert!(matches!(
            t.lookup(&Method::GET, "/v4/auth/test"),
            Lookup::Found {
                legacy: Some(4),
                ..
            }
        ));
        assert!(matches!(
            t.lookup(&Method::GET, "/v1/config/get"),
            Lookup::NotFound
        ));
        assert!(matches!(
            t.lookup(&Method::DELETE, "/manager/status"),
            Lookup::WrongMethod { .. }
        ));
        assert!(matches!(
            t.lookup(&Method::GET, "/nowhere"),
            Lookup::NotFound
        ));
    }

    #[test]
    fn every_changing_route_requires_authentication() {
        // Only the documented public endpoints are reachable without a keypair.
        let public: Vec<String> = route_table()
            .routes()
            .iter()
            .filter(|r| r.access == Access::Public)
            .map(|r| format!("{} {}", r.method, r.full_path()))
            .collect();
        assert_eq!(
            public,
            [
                "GET /",
                "GET /metrics",
                "POST /auth/authorize",
                "GET /manager/status",
                "GET /config/resource-slots"
            ]
        );
    }
}
