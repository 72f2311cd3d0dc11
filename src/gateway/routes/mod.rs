//! The route table: every endpoint with its versions, access and status gate.

mod auth;
pub mod config;
mod folders;
pub mod kernel;
mod manager;
mod resource;
mod root;
mod stream;
pub mod ui;
mod usage;

use super::router::{Access, Gate, Handler, Route, Router};
use warp::http::Method;

/// Wraps an `async fn(Arc<App>, Ctx)` as a table handler.
macro_rules! h {
    ($f:path) => {{
        let handler: Handler = |app, ctx| Box::pin($f(app, ctx));
        handler
    }};
}

/// One line per route: `METHOD prefix path versions, access gate => handler;`.
/// A trailing `streamed` marks routes that read their body as a stream.
macro_rules! table {
    ($($method:ident $prefix:literal $path:literal $versions:expr, $access:ident $gate:ident => $f:path $(, $streamed:ident)?;)*) => {
        vec![$(Route {
            method: Method::$method,
            prefix: $prefix,
            path: $path,
            versions: $versions,
            access: Access::$access,
            gate: Gate::$gate,
            handler: h!($f),
            stream_body: table!(@streamed $($streamed)?),
        },)*]
    };
    (@streamed) => { false };
    (@streamed streamed) => { true };
}

const NONE: &[u8] = &[];
const ALL_V: &[u8] = &[1, 2, 3, 4];
const CONFIG_V: &[u8] = &[3, 4];
const MANAGER_V: &[u8] = &[2, 3, 4];
const ADMIN_V: &[u8] = &[2, 3, 4];
const STREAM_V: &[u8] = &[2, 3, 4];
const RESOURCE_V: &[u8] = &[4];
const FOLDERS_V: &[u8] = &[2, 3, 4];

pub fn route_table() -> Router {
    Router::new(table! {
        GET "" "" NONE, Public Any => root::hello;
        GET "" "/metrics" NONE, Public Any => root::metrics;
        GET "" "/ui" NONE, Public Any => ui::redirect;
        GET "" "/ui/" NONE, Public Any => ui::asset;
        GET "" "/ui/{*path}" NONE, Public Any => ui::asset;
        POST "auth" "/session" NONE, Public Any => auth::login;
        GET "auth" "/session" NONE, User Any => auth::whoami;
        DELETE "auth" "/session" NONE, User Any => auth::logout;
        GET "auth" "" ALL_V, User Any => auth::echo;
        POST "auth" "" ALL_V, User Any => auth::echo;
        GET "auth" "/test" ALL_V, User Any => auth::echo;
        POST "auth" "/test" ALL_V, User Any => auth::echo;
        POST "auth" "/authorize" ALL_V, Public Any => auth::authorize;
        GET "manager" "/status" MANAGER_V, Public Any => manager::get_status;
        PUT "manager" "/status" MANAGER_V, Admin Any => manager::put_status;
        GET "config" "/resource-slots" CONFIG_V, Public Any => config::resource_slots;
        POST "config" "/get" CONFIG_V, Admin Any => config::get;
        POST "config" "/set" CONFIG_V, Admin Any => config::set;
        POST "config" "/delete" CONFIG_V, Admin Any => config::delete;
        POST "admin" "/graphql" ADMIN_V, User Read => crate::gateway::graphql::handle;
        GET "kernel" "/usage/{month}" ALL_V, Superadmin Read => usage::kernel_month;
        GET "kernel" "/usage/period/{group_id}" ALL_V, Superadmin Read => usage::kernel_period;
        GET "resource" "/usage/month" RESOURCE_V, Superadmin Read => usage::resource_month;
        GET "resource" "/usage/period" RESOURCE_V, Superadmin Read => usage::resource_period;
        POST "kernel" "" ALL_V, User All => kernel::create;
        POST "kernel" "/create" ALL_V, User All => kernel::create;
        GET "kernel" "/{sess_id}" ALL_V, User Read => kernel::info;
        PATCH "kernel" "/{sess_id}" ALL_V, User Read => kernel::restart;
        DELETE "kernel" "/{sess_id}" ALL_V, User Read => kernel::destroy;
        POST "kernel" "/{sess_id}" ALL_V, User Read => kernel::execute;
        GET "kernel" "/{sess_id}/logs" ALL_V, User Read => kernel::logs;
        POST "kernel" "/{sess_id}/interrupt" ALL_V, User Read => kernel::interrupt;
        POST "kernel" "/{sess_id}/complete" ALL_V, User Read => kernel::complete;
        POST "kernel" "/{sess_id}/upload" ALL_V, User Read => kernel::upload;
        GET "kernel" "/{sess_id}/download" ALL_V, User Read => kernel::download;
        GET "kernel" "/{sess_id}/files" ALL_V, User Read => kernel::list_files;
        GET "stream" "/kernel/_/events" STREAM_V, User Read => stream::events;
        GET "stream" "/kernel/{sess_id}/execute" STREAM_V, User Read => stream::execute;
        GET "stream" "/kernel/{sess_id}/pty" STREAM_V, User Read => stream::pty;
        GET "stream" "/kernel/{sess_id}/httpproxy" STREAM_V, User Read => stream::proxy;
        GET "stream" "/kernel/{sess_id}/tcpproxy" STREAM_V, User Read => stream::proxy;
        GET "stream" "/kernel/{sess_id}/apps" STREAM_V, User Read => stream::apps;
        POST "stream" "/kernel/{sess_id}/apps/{app}/launch" STREAM_V, User Read => stream::launch_app;
        POST "folders" "" FOLDERS_V, User All => folders::create;
        GET "folders" "" FOLDERS_V, User Read => folders::list;
        GET "folders" "/_/hosts" FOLDERS_V, User Read => folders::list_hosts;
        GET "folders" "/invitations/list" FOLDERS_V, User Read => folders::invitations;
        POST "folders" "/invitations/accept" FOLDERS_V, User All => folders::accept;
        DELETE "folders" "/invitations/delete" FOLDERS_V, User All => folders::reject;
        GET "folders" "/{name}" FOLDERS_V, User Read => folders::info;
        DELETE "folders" "/{name}" FOLDERS_V, User All => folders::delete;
        POST "folders" "/{name}/rename" FOLDERS_V, User All => folders::rename;
        POST "folders" "/{name}/mkdir" FOLDERS_V, User Read => folders::mkdir;
        POST "folders" "/{name}/upload" FOLDERS_V, User Read => folders::upload, streamed;
        DELETE "folders" "/{name}/delete_files" FOLDERS_V, User Read => folders::delete_files;
        GET "folders" "/{name}/download" FOLDERS_V, User Read => folders::download;
        GET "folders" "/{name}/download_single" FOLDERS_V, User Read => folders::download_single;
        GET "folders" "/{name}/files" FOLDERS_V, User Read => folders::files;
        POST "folders" "/{name}/invite" FOLDERS_V, User All => folders::invite;
        GET "resource" "/presets" RESOURCE_V, User Any => resource::presets;
        POST "resource" "/check-presets" RESOURCE_V, User Read => resource::check_presets;
    })
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
                "GET /ui",
                "GET /ui/",
                "GET /ui/{*path}",
                "POST /auth/session",
                "POST /auth/authorize",
                "GET /manager/status",
                "GET /config/resource-slots"
            ]
        );
    }
}
