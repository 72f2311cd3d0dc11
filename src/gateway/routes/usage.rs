//! Usage reports per group (superadmins): the sessions that ended in a month or a period,
//! with what each used, summed per group. Served at the original's `/kernel/usage/...`
//! and at `/resource/usage/...` where later clients look.

use crate::gateway::error::ApiError;
use crate::gateway::router::{ok_json, Ctx};
use crate::registry::sessions::parse_slots;
use crate::server::App;
use chrono::{Datelike, NaiveDate};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use warp::http::Response;
use warp::hyper::Body;

type Reply = Result<Response<Body>, ApiError>;

#[derive(Deserialize, Default)]
struct Groups {
    #[serde(default, alias = "project_ids", alias = "group", alias = "project")]
    group_ids: Vec<String>,
    #[serde(default)]
    month: Option<String>,
    #[serde(default)]
    start_date: Option<String>,
    #[serde(default)]
    end_date: Option<String>,
    #[serde(default)]
    group_id: Option<String>,
}

/// `YYYYMM`, or `MM` (this year, or last year for a month still to come).
fn month_range(month: &str) -> Result<(NaiveDate, NaiveDate), ApiError> {
    let bad = || ApiError::bad_params(format!("'{month}' is not a month (YYYYMM or MM)"));
    let today = chrono::Utc::now().date_naive();
    let (year, m) = match month.len() {
        6 => (
            month[..4].parse::<i32>().map_err(|_| bad())?,
            month[4..].parse::<u32>().map_err(|_| bad())?,
        ),
        1 | 2 => {
            let m = month.parse::<u32>().map_err(|_| bad())?;
            (
                if m > today.month() {
                    today.year() - 1
                } else {
                    today.year()
                },
                m,
            )
        }
        _ => return Err(bad()),
    };
    let start = NaiveDate::from_ymd_opt(year, m, 1).ok_or_else(bad)?;
    let end = if m == 12 {
        NaiveDate::from_ymd_opt(year + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(year, m + 1, 1)
    }
    .ok_or_else(bad)?;
    Ok((start, end))
}

fn day(s: &str) -> Result<NaiveDate, ApiError> {
    NaiveDate::parse_from_str(s, "%Y%m%d")
        .map_err(|_| ApiError::bad_params(format!("'{s}' is not a date (YYYYMMDD)")))
}

fn metric(stat: &Value, name: &str, field: &str) -> f64 {
    stat[name][field]
        .as_str()
        .and_then(|v| v.parse().ok())
        .or_else(|| stat[name][field].as_f64())
        .unwrap_or(0.0)
}

fn seconds_between(a: &str, b: &str) -> i64 {
    match (
        chrono::DateTime::parse_from_rfc3339(a),
        chrono::DateTime::parse_from_rfc3339(b),
    ) {
        (Ok(a), Ok(b)) => (b - a).num_seconds().max(0),
        _ => 0,
    }
}

/// The report for sessions ended in `[start, end)` of the given groups (all when empty).
async fn report(
    app: &App,
    groups: Vec<String>,
    start: NaiveDate,
    end: NaiveDate,
) -> Result<Vec<Value>, ApiError> {
    if end <= start {
        return Err(ApiError::bad_params("the period ends before it starts"));
    }
    let (from, to) = (format!("{start}T00:00:00Z"), format!("{end}T00:00:00Z"));
    let rows = app
        .store
        .read(move |c| crate::store::sessions::ended_between(c, &from, &to))
        .await?;
    let mut out: Vec<Value> = Vec::new();
    for k in rows {
        let crate::store::sessions::EndedKernel {
            group_id: gid,
            group_name: gname,
            domain_name: domain,
            id: kid,
            sess_id: sess,
            image,
            occupied_slots: slots,
            last_stat: last,
            created_at: created,
            terminated_at: ended,
        } = k;
        if !groups.is_empty() && !groups.contains(&gid) {
            continue;
        }
        let slots = parse_slots(&slots)?;
        let stat: Value = last
            .as_deref()
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or(Value::Null);
        let secs = seconds_between(&created, &ended);
        let info = json!({
            "id": kid,
            "name": sess,
            "cpu_used": metric(&stat, "cpu_used", "current"),
            "mem_allocated": slots.get("mem").to_string().parse::<f64>().unwrap_or(0.0),
            "mem_used": metric(&stat, "mem", "stats.max").max(metric(&stat, "mem", "current")),
            "shared_memory": 0,
            "disk_used": metric(&stat, "io_scratch_size", "stats.max"),
            "io_read": metric(&stat, "io_read", "current"),
            "io_write": metric(&stat, "io_write", "current"),
            "used_time": format!("{}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60),
            "used_days": null,
            "device_type": null,
            "smp": slots.get("cpu").to_string().parse::<f64>().unwrap_or(0.0),
            "nfs": null,
            "image_id": null,
            "image_name": image,
            "created_at": created,
            "terminated_at": ended,
        });
        let at = match out.iter().position(|g| g["g_id"] == gid.as_str()) {
            Some(i) => i,
            None => {
                out.push(json!({"domain_name": domain, "g_id": gid, "g_name": gname, "g_cpu_used": 0.0,
                                "g_mem_used": 0.0, "g_shared_memory": 0, "g_disk_used": 0.0, "g_io_read": 0.0,
                                "g_io_write": 0.0, "g_device_type": [], "g_smp": 0.0, "c_infos": []}));
                out.len() - 1
            }
        };
        let group = &mut out[at];
        for (g, c) in [
            ("g_cpu_used", "cpu_used"),
            ("g_mem_used", "mem_used"),
            ("g_disk_used", "disk_used"),
            ("g_io_read", "io_read"),
            ("g_io_write", "io_write"),
            ("g_smp", "smp"),
        ] {
            group[g] = json!(group[g].as_f64().unwrap_or(0.0) + info[c].as_f64().unwrap_or(0.0));
        }
        if let Some(list) = group["c_infos"].as_array_mut() {
            list.push(info);
        }
    }
    Ok(out)
}

/// GET /kernel/usage/{month}
pub async fn kernel_month(app: Arc<App>, ctx: Ctx) -> Reply {
    let body: Groups = ctx.json()?;
    let (start, end) = month_range(ctx.param("month"))?;
    ok_json(Value::Array(
        report(&app, body.group_ids, start, end).await?,
    ))
}

/// GET /kernel/usage/period/{group_id}
pub async fn kernel_period(app: Arc<App>, ctx: Ctx) -> Reply {
    let body: Groups = ctx.json()?;
    let (start, end) = period(&body)?;
    let group = ctx.param("group_id").to_owned();
    let mut groups = report(&app, vec![group.clone()], start, end).await?;
    let mut one = groups
        .pop()
        .unwrap_or_else(|| json!({"g_id": group, "c_infos": []}));
    one["start_date"] = json!(body.start_date);
    one["end_date"] = json!(body.end_date);
    ok_json(one)
}

fn period(body: &Groups) -> Result<(NaiveDate, NaiveDate), ApiError> {
    let start = day(body
        .start_date
        .as_deref()
        .ok_or_else(|| ApiError::bad_params("start_date is required"))?)?;
    let end = day(body
        .end_date
        .as_deref()
        .ok_or_else(|| ApiError::bad_params("end_date is required"))?)?;
    Ok((start, end))
}

/// GET /resource/usage/month: `{"month": "YYYYMM", "group_ids": [...]}`
pub async fn resource_month(app: Arc<App>, ctx: Ctx) -> Reply {
    let body: Groups = ctx.json()?;
    let month = body
        .month
        .clone()
        .ok_or_else(|| ApiError::bad_params("month is required"))?;
    let (start, end) = month_range(&month)?;
    ok_json(Value::Array(
        report(&app, body.group_ids, start, end).await?,
    ))
}

/// GET /resource/usage/period: `{"start_date", "end_date", "group_id"?}`
pub async fn resource_period(app: Arc<App>, ctx: Ctx) -> Reply {
    let body: Groups = ctx.json()?;
    let (start, end) = period(&body)?;
    let groups = body
        .group_id
        .clone()
        .into_iter()
        .chain(body.group_ids.clone())
        .collect();
    ok_json(Value::Array(report(&app, groups, start, end).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_and_days_parse_strictly() {
        let (a, b) = month_range("202412").unwrap();
        assert_eq!(
            (a.to_string(), b.to_string()),
            ("2024-12-01".into(), "2025-01-01".into())
        );
        assert!(month_range("202413").is_err());
        assert!(month_range("abc").is_err());
        let (a, _) = month_range("1").unwrap();
        assert_eq!(a.month(), 1);
        assert!(day("20240230").is_err());
        assert_eq!(day("20240229").unwrap().to_string(), "2024-02-29");
    }
}
