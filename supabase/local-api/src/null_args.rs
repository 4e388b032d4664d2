//! Gap 4 of postrust against PostgREST: a JSON `null` RPC argument.
//!
//! postrust binds every named RPC argument as text and turns `null` into `''`, so
//! `{"p_group_id": null}` fails with 22P02 and `{"p_nickname": null}` passes an empty string,
//! where PostgREST passes SQL NULL. Our contract uses NULL on purpose (ungroup a channel,
//! "inherit" overwrite flags, invites that never expire), so the wrapper fixes it:
//!
//! - a null for a parameter whose default is NULL is dropped (identical meaning, and postrust
//!   stays in charge of the call);
//! - any other null makes the wrapper call the function itself, through postrust's own
//!   extension API (`User` + `AppState::begin_as`: same token checks, role, claims and
//!   pre-request as REST), rendering results and errors the way postrust does.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{header, request::Parts, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use postrust_server::{AppState, User};
use serde_json::{Map, Value};
use sqlx::{PgPool, Row};

/// State of [`null_arguments`].
#[derive(Clone)]
pub struct NullArgs {
    rest: Arc<AppState>,
    catalog: PgPool,
    max_body_bytes: usize,
}

impl NullArgs {
    /// `rest` is postrust's state (for authentication and transactions); `catalog` any pool
    /// on the same database, to read function signatures.
    pub fn new(rest: Arc<AppState>, catalog: PgPool, max_body_bytes: usize) -> Self {
        Self {
            rest,
            catalog,
            max_body_bytes,
        }
    }
}

/// One input parameter of a function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// Name.
    pub name: String,
    /// `pg_get_function_arg_default`, e.g. `NULL::uuid` or `24`; `None` without a default.
    pub default: Option<String>,
    /// `format_type` of the parameter, e.g. `uuid`, `text[]`.
    pub type_name: String,
}

impl Param {
    /// Leaving the argument out means NULL.
    fn defaults_to_null(&self) -> bool {
        self.default
            .as_deref()
            .is_some_and(|d| d.trim().to_ascii_uppercase().starts_with("NULL"))
    }
}

/// A function's signature and result shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routine {
    /// Input parameters.
    pub params: Vec<Param>,
    /// `returns setof ...` / `returns table (...)`.
    pub returns_set: bool,
    /// Returns a row (composite or table) rather than a scalar.
    pub returns_row: bool,
    /// `returns void`.
    pub returns_void: bool,
}

/// What to do with one request's arguments.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Forward this body to postrust (nulls that default to NULL removed).
    Forward(Map<String, Value>),
    /// postrust cannot express these nulls: call the function here.
    CallDirectly,
}

/// Decide how to handle `args` for `routine`.
pub fn plan(routine: &Routine, args: Map<String, Value>) -> Plan {
    let mut forwarded = Map::new();
    for (name, value) in args {
        if !value.is_null() {
            forwarded.insert(name, value);
            continue;
        }
        match routine.params.iter().find(|p| p.name == name) {
            Some(param) if param.defaults_to_null() => {}
            Some(_) => return Plan::CallDirectly,
            // Not a parameter: postrust reports or ignores it as PostgREST would.
            None => {
                forwarded.insert(name, value);
            }
        }
    }
    Plan::Forward(forwarded)
}

/// The middleware. Only `POST /rpc/<name>` bodies containing a `null` are touched.
pub async fn null_arguments(
    State(state): State<NullArgs>,
    request: Request,
    next: Next,
) -> Response {
    let Some(function) = rpc_name(&request) else {
        return next.run(request).await;
    };
    let (mut parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, state.max_body_bytes).await {
        Ok(bytes) => bytes,
        // The outer limit already refused bodies over the limit; a broken body is postrust's
        // to report, so it gets an empty one and says "invalid JSON".
        Err(_) => return next.run(Request::from_parts(parts, Body::empty())).await,
    };
    let forward = |parts: Parts, body: Body| next.run(Request::from_parts(parts, body));
    // Most calls carry no null: skip parsing them.
    if !contains_null(&bytes) {
        return forward(parts, Body::from(bytes)).await;
    }
    let args = match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) if map.values().any(Value::is_null) => map,
        _ => return forward(parts, Body::from(bytes)).await,
    };
    let routine = match routine(&state.catalog, &function).await {
        Ok(Some(routine)) => routine,
        // Unknown or overloaded: postrust answers (404, or picks the overload).
        Ok(None) => return forward(parts, Body::from(bytes)).await,
        Err(e) => {
            tracing::error!("reading the signature of {function}: {e}");
            return forward(parts, Body::from(bytes)).await;
        }
    };
    match plan(&routine, args.clone()) {
        Plan::Forward(map) => {
            let body = Value::Object(map).to_string();
            parts
                .headers
                .insert(header::CONTENT_LENGTH, body.len().into());
            forward(parts, Body::from(body)).await
        }
        Plan::CallDirectly => call_directly(&state.rest, parts, &function, &routine, args).await,
    }
}

/// `Some(function)` for `POST /rpc/<function>` (the path below the mount).
fn rpc_name(request: &Request) -> Option<String> {
    if request.method() != axum::http::Method::POST {
        return None;
    }
    let name = request.uri().path().strip_prefix("/rpc/")?;
    (!name.is_empty() && !name.contains('/')).then(|| name.to_string())
}

fn contains_null(bytes: &[u8]) -> bool {
    bytes.windows(4).any(|w| w == b"null")
}

/// The signature of `public.<name>`, or `None` when there is not exactly one such function.
async fn routine(pool: &PgPool, name: &str) -> Result<Option<Routine>, sqlx::Error> {
    let functions = sqlx::query(
        "select p.oid::bigint as oid, p.proretset, p.prorettype = 'void'::regtype as returns_void, \
                (t.typtype = 'c' or 't' = any(coalesce(p.proargmodes, '{}'))) as returns_row \
         from pg_proc p join pg_type t on t.oid = p.prorettype \
         where p.pronamespace = 'public'::regnamespace and p.proname = $1",
    )
    .bind(name)
    .fetch_all(pool)
    .await?;
    let [function] = functions.as_slice() else {
        return Ok(None);
    };
    let oid: i64 = function.try_get("oid")?;
    // Input parameters only (modes i, b, v); OUT/TABLE columns are not arguments.
    let params = sqlx::query(
        "select a.name, pg_get_function_arg_default(p.oid, a.ord::int) as default_expr, \
                format_type(coalesce(p.proallargtypes[a.ord], p.proargtypes[a.ord - 1]), null) as type_name \
         from pg_proc p, unnest(p.proargnames) with ordinality as a(name, ord) \
         where p.oid = $1::oid and coalesce(p.proargmodes[a.ord], 'i') in ('i', 'b', 'v') \
         order by a.ord",
    )
    .bind(oid)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|row| {
        Ok(Param {
            name: row.try_get("name")?,
            default: row.try_get("default_expr")?,
            type_name: row.try_get::<Option<String>, _>("type_name")?.unwrap_or_default(),
        })
    })
    .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(Some(Routine {
        params,
        returns_set: function.try_get("proretset")?,
        returns_row: function.try_get("returns_row")?,
        returns_void: function.try_get("returns_void")?,
    }))
}

/// SQL that calls `public.<function>` with the arguments in `args` (bound as one jsonb, `$1`),
/// and returns its result as one jsonb value shaped like PostgREST's response.
pub fn call_sql(function: &str, routine: &Routine, args: &Map<String, Value>) -> Option<String> {
    let mut named = Vec::new();
    for (name, value) in args {
        let param = routine.params.iter().find(|p| &p.name == name)?;
        let key = literal(name);
        let ty = &param.type_name;
        let expr = if value.is_null() {
            format!("NULL::{ty}")
        } else if ty == "json" || ty == "jsonb" {
            format!("($1->{key})::{ty}")
        } else if ty.ends_with("[]") {
            format!(
                "(case jsonb_typeof($1->{key}) when 'array' \
                   then array(select jsonb_array_elements_text($1->{key})) \
                   else null end)::{ty}"
            )
        } else {
            format!("($1->>{key})::{ty}")
        };
        named.push(format!("{} => {expr}", ident(name)));
    }
    let call = format!("public.{}({})", ident(function), named.join(", "));
    Some(
        match (
            routine.returns_void,
            routine.returns_set,
            routine.returns_row,
        ) {
            (true, _, _) => format!("select {call}, null::jsonb"),
            (false, true, true) => {
                format!("select coalesce(jsonb_agg(to_jsonb(r)), '[]'::jsonb) from {call} r")
            }
            (false, true, false) => {
                format!(
                    "select coalesce(jsonb_agg(to_jsonb(r.v)), '[]'::jsonb) from {call} as r(v)"
                )
            }
            (false, false, true) => format!("select to_jsonb(r) from {call} r"),
            (false, false, false) => format!("select to_jsonb({call})"),
        },
    )
}

fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Call the function as the request's user, in a transaction set up exactly as postrust sets
/// up REST requests, and answer as postrust would.
async fn call_directly(
    rest: &Arc<AppState>,
    mut parts: Parts,
    function: &str,
    routine: &Routine,
    args: Map<String, Value>,
) -> Response {
    let user = match User::from_request_parts(&mut parts, rest).await {
        Ok(user) => user,
        Err(refusal) => return refusal.into_response(),
    };
    let Some(sql) = call_sql(function, routine, &args) else {
        // An argument the function does not have: unreachable from `plan`, which only sends
        // calls here for known parameters; refuse plainly rather than guess.
        return (StatusCode::BAD_REQUEST, "unknown RPC argument").into_response();
    };
    let result: Result<Option<Value>, postrust_server::Error> = async {
        let mut tx = rest.begin_as(&user).await?;
        // The column index, not a name: the void shape selects two columns.
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(Value::Object(args))
            .fetch_optional(&mut *tx)
            .await?;
        let value = match row {
            Some(row) => {
                row.try_get::<Option<Value>, _>(if routine.returns_void { 1 } else { 0 })?
            }
            None => None,
        };
        tx.commit().await?;
        Ok(value)
    }
    .await;
    match result {
        Ok(_) if routine.returns_void => StatusCode::NO_CONTENT.into_response(),
        Ok(value) => {
            let body = value.unwrap_or(Value::Null).to_string();
            let mut response = Response::new(Body::from(body));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            );
            response
        }
        // Rendered by postrust's own error renderer, with the server's configuration (compat
        // mode: database errors in the database's words), as a REST error would be.
        Err(error) => {
            postrust_engine::error_response_for(&rest.config, error.into_core()).map(Body::from)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn param(name: &str, default: Option<&str>, ty: &str) -> Param {
        Param {
            name: name.into(),
            default: default.map(str::to_string),
            type_name: ty.into(),
        }
    }

    fn create_invite() -> Routine {
        Routine {
            params: vec![
                param("p_community_id", None, "uuid"),
                param("p_max_uses", Some("NULL::integer"), "integer"),
                param("p_expires_in_hours", Some("24"), "integer"),
            ],
            returns_set: false,
            returns_row: true,
            returns_void: false,
        }
    }

    fn object(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    #[test]
    fn nulls_defaulting_to_null_are_dropped_and_postrust_keeps_the_call() {
        let args = object(json!({"p_community_id": "c", "p_max_uses": null}));
        assert_eq!(
            plan(&create_invite(), args),
            Plan::Forward(object(json!({"p_community_id": "c"})))
        );
    }

    #[test]
    fn other_nulls_are_called_directly_never_silently_defaulted() {
        // Omitting p_expires_in_hours would turn "never expires" into "24 hours".
        let args = object(json!({"p_community_id": "c", "p_expires_in_hours": null}));
        assert_eq!(plan(&create_invite(), args), Plan::CallDirectly);
    }

    #[test]
    fn unknown_keys_are_left_for_postrust() {
        let args = object(json!({"p_nope": null}));
        assert_eq!(plan(&create_invite(), args.clone()), Plan::Forward(args));
    }

    #[test]
    fn call_sql_types_every_argument_and_shapes_the_result() {
        let args = object(json!({"p_community_id": "c", "p_expires_in_hours": null}));
        let sql = call_sql("create_invite", &create_invite(), &args).unwrap();
        assert_eq!(
            sql,
            "select to_jsonb(r) from public.\"create_invite\"(\"p_community_id\" => ($1->>'p_community_id')::uuid, \
             \"p_expires_in_hours\" => NULL::integer) r"
        );
        let void = Routine {
            returns_void: true,
            ..create_invite()
        };
        assert!(call_sql("f", &void, &Map::new())
            .unwrap()
            .starts_with("select public.\"f\"(), null::jsonb"));
        let set_of_scalars = Routine {
            returns_set: true,
            returns_row: false,
            ..create_invite()
        };
        assert!(call_sql("f", &set_of_scalars, &Map::new())
            .unwrap()
            .contains("as r(v)"));
        let arrays = Routine {
            params: vec![param("p_keys", None, "text[]")],
            ..create_invite()
        };
        let sql = call_sql("f", &arrays, &object(json!({"p_keys": ["a"]}))).unwrap();
        assert!(
            sql.contains("jsonb_array_elements_text($1->'p_keys')"),
            "{sql}"
        );
        assert_eq!(
            call_sql("f", &create_invite(), &object(json!({"p_unknown": 1}))),
            None
        );
    }

    #[test]
    fn only_rpc_posts_are_inspected() {
        let req = |method: &str, uri: &str| {
            Request::builder()
                .method(method)
                .uri(uri)
                .body(Body::empty())
                .unwrap()
        };
        assert_eq!(
            rpc_name(&req("POST", "/rpc/create_invite")).as_deref(),
            Some("create_invite")
        );
        assert_eq!(rpc_name(&req("GET", "/rpc/create_invite")), None);
        assert_eq!(rpc_name(&req("POST", "/communities")), None);
        assert!(contains_null(br#"{"a":null}"#) && !contains_null(br#"{"a":1}"#));
    }
}
