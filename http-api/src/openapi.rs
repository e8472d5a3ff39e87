//! The OpenAPI 3.1 document of the API, generated from the very types the routes parse and
//! answer, so client libraries generated from it match the server.

use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use crate::calls::{Kind, docs};
use crate::error::ErrorBody;
use crate::routes::{BatchRequest, BatchResponse};

/// The document as JSON.
pub fn document() -> Value {
    let mut generator =
        SchemaSettings::draft2020_12().with(|s| s.definitions_path = "/components/schemas".into()).into_generator();
    let error = generator.subschema_for::<ErrorBody>();
    let err = |description: &str| json!({ "description": description, "content": { "application/json": { "schema": error.clone() } } });
    let errors = |extra: &[(&str, &str)]| {
        let mut m = Map::new();
        m.insert("400".into(), err("Bad request: the body is not the expected JSON; `field` names what is wrong."));
        m.insert("401".into(), err("Missing or invalid API key."));
        m.insert("403".into(), err("The API key's access does not allow this call."));
        m.insert("413".into(), err("The body is larger than max_body."));
        m.insert("431".into(), err("The request head is larger than the server takes."));
        m.insert("503".into(), err("No gateway is connected (or the client's gateway is not)."));
        for (code, text) in extra {
            m.insert((*code).into(), err(text));
        }
        m
    };
    let mut paths = Map::new();
    for call in docs() {
        let args = (call.args)(&mut generator);
        let output = (call.output)(&mut generator);
        let mut responses = errors(&[
            ("404", "The client is gone (its gateway restarted or left the cluster)."),
            ("502", "A gateway refused the query."),
            ("504", "A gateway did not answer in time."),
        ]);
        responses.insert(
            "200".into(),
            json!({
                "description": "Done. `missing` lists gateways that did not answer or did not get the command: the value may be partial.",
                "content": { "application/json": { "schema": output } }
            }),
        );
        paths.insert(
            format!("/v1/{}", call.name),
            json!({ "post": {
                "operationId": call.name,
                "summary": call.summary,
                "tags": [tag(call.kind)],
                "requestBody": { "required": false, "content": { "application/json": { "schema": args } } },
                "responses": responses,
            }}),
        );
    }
    let batch_request = generator.subschema_for::<BatchRequest>();
    let batch_response = generator.subschema_for::<BatchResponse>();
    let mut responses = errors(&[]);
    responses.insert(
        "200".into(),
        json!({
            "description": "Every call ran, in order; one result per call (a value or an error). The results hold at most max_response bytes: a result that would not fit is replaced by a 422 `answer_too_large` error.",
            "content": { "application/json": { "schema": batch_response } }
        }),
    );
    paths.insert(
        "/v1/batch".into(),
        json!({ "post": {
            "operationId": "batch",
            "summary": "Runs several calls in one request, in order. The key must allow every call; nothing runs if one is malformed or not allowed.",
            "tags": ["batch"],
            "requestBody": { "required": true, "content": { "application/json": { "schema": batch_request } } },
            "responses": responses,
        }}),
    );
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "gatewayrs HTTP push API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The Gateway API over HTTP: push to clients, uids and groups, manage uids, groups and sessions, and ask the cluster. Every call is POST /v1/<call> with its arguments as a JSON object; messages are a string (text frame) or {\"base64\": ...} (binary frame).",
        },
        "paths": paths,
        "components": {
            "schemas": generator.take_definitions(true),
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
        },
        "security": [{ "bearer": [] }],
    })
}

fn tag(kind: Kind) -> &'static str {
    kind.as_str()
}
