//! The OpenAPI 3.1 document of the server, built in code next to the handlers and checked
//! into `schemas/openapi.json` (a test fails when they drift).

use serde_json::{Value, json};

fn error_responses() -> Value {
    json!({
        "400": {"description": "Invalid request: the error names the problem", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
        "404": {"description": "Unknown view, service or feature", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
        "408": {"description": "The body did not arrive within server.body_read_timeout_ms", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
        "413": {"description": "Body or entity count over the limit", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
        "503": {"description": "The online store is unavailable or the request timed out", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    })
}

fn write_responses(ok: &str) -> Value {
    let mut responses = error_responses();
    responses["200"] = json!({"description": ok});
    responses["401"] = json!({"description": "API key missing"});
    responses["403"] = json!({"description": "API key wrong"});
    responses
}

fn with_ok(ok: Value) -> Value {
    let mut responses = error_responses();
    responses["200"] = ok;
    responses
}

/// The OpenAPI document.
pub fn document() -> Value {
    let registry_list = |what: &str| json!({"get": {"summary": format!("List {what}"), "responses": {"200": {"description": format!("The {what} in the registry")}}}});
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Quiver feature server", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Feast-compatible online feature serving."},
        "paths": {
            "/get-online-features": {"post": {
                "summary": "Latest feature values of entities (Feast's format)",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/OnlineRequest"}}}},
                "responses": with_ok(json!({"description": "One result per name, entity columns first",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/OnlineResponse"}}}}))
            }},
            "/push": {"post": {
                "summary": "Push rows into a feature view or a source (every view reading it), to the online store (newer-wins), the offline table, or both",
                "security": [{"apiKey": []}],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PushRequest"}}}},
                "responses": write_responses("Rows written")
            }},
            "/write-to-online-store": {"post": {
                "summary": "Feast's write: rows of one feature view into the online store (newer-wins); answers null",
                "security": [{"apiKey": []}],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/WriteRequest"}}}},
                "responses": write_responses("Rows written (body null)")
            }},
            "/materialize": {"post": {
                "summary": "Materialize views over [start_ts, end_ts]",
                "security": [{"apiKey": []}],
                "parameters": [{"name": "async", "in": "query", "schema": {"type": "boolean"}, "description": "answer 202 at once; the run goes on"}],
                "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/MaterializeRequest"}}}},
                "responses": {
                    "200": {"description": "One report per view"}, "202": {"description": "Accepted (async)"}, "401": {"description": "API key missing"},
                    "403": {"description": "API key wrong"}, "409": {"description": "A materialization of the view is running"}
                }
            }},
            "/materialize-incremental": {"post": {
                "summary": "Materialize views from their watermark up to end_ts",
                "security": [{"apiKey": []}],
                "parameters": [{"name": "async", "in": "query", "schema": {"type": "boolean"}, "description": "answer 202 at once; the run goes on"}],
                "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/IncrementalRequest"}}}},
                "responses": {
                    "200": {"description": "One report per view materialized"}, "202": {"description": "Accepted (async)"}, "401": {"description": "API key missing"},
                    "403": {"description": "API key wrong"}, "409": {"description": "A materialization of the view is running"}
                }
            }},
            "/health": {"get": {"summary": "200 when the online store answers, 503 otherwise",
                "responses": {"200": {"description": "Healthy"}, "503": {"description": "The reason"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "Prometheus text format"}}}},
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.1"}}}},
            "/api/v1/feature-views": registry_list("feature views"),
            "/api/v1/feature-views/{name}": {"get": {"summary": "One feature view",
                "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "The view at its current version"}, "404": {"description": "Unknown view"}}}},
            "/api/v1/feature-services": registry_list("feature services"),
            "/api/v1/entities": registry_list("entities")
        },
        "components": {
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error", "kind"], "properties": {
                    "error": {"type": "string"}, "kind": {"type": "string"}}},
                "OnlineRequest": {"type": "object", "required": ["entities"], "description": "other fields are ignored, as Feast's server ignores them", "properties": {
                    "features": {"type": ["array", "null"], "items": {"type": "string"}, "description": "view:feature (not with feature_service)"},
                    "feature_service": {"type": "string"},
                    "entities": {"type": "object", "additionalProperties": {"type": "array"}, "description": "columns of entity keys and, for on-demand views, request fields: name -> one value per entity row"},
                    "full_feature_names": {"type": "boolean", "default": false},
                    "include_feature_view_version_metadata": {"type": "boolean", "default": false}}},
                "OnlineResponse": {"type": "object", "properties": {
                    "metadata": {"type": "object", "properties": {
                        "feature_names": {"type": "array", "items": {"type": "string"}},
                        "feature_view_metadata": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}, "version": {"type": "integer"}}}}}},
                    "results": {"type": "array", "items": {"type": "object", "properties": {
                        "values": {"type": "array"},
                        "statuses": {"type": "array", "items": {"enum": ["PRESENT", "NULL_VALUE", "NOT_FOUND", "OUTSIDE_MAX_AGE"]}},
                        "event_timestamps": {"type": "array", "items": {"type": "string", "format": "date-time"}}}}}}},
                "PushRequest": {"type": "object", "required": ["df"], "description": "other fields (allow_registry_cache, transform_on_write, …) are ignored", "properties": {
                    "feature_view": {"type": "string", "description": "push rows in the view's shape"},
                    "push_source_name": {"type": "string", "description": "push rows in a source's shape to every view reading it"},
                    "df": {"type": "object", "additionalProperties": {"type": "array"}},
                    "to": {"enum": ["online", "offline", "online_and_offline", "both"], "default": "online"}}},
                "WriteRequest": {"type": "object", "required": ["feature_view_name", "df"], "properties": {
                    "feature_view_name": {"type": "string"},
                    "df": {"type": "object", "additionalProperties": {"type": "array"}, "description": "keys, features, event_timestamp and created (times without a zone: UTC)"}}},
                "MaterializeRequest": {"type": "object", "properties": {
                    "start_ts": {"type": ["string", "null"], "description": "ISO 8601; without a zone: UTC"},
                    "end_ts": {"type": ["string", "null"], "description": "ISO 8601; without a zone: UTC"},
                    "feature_views": {"type": ["array", "null"], "items": {"type": "string"}, "description": "null: every view"},
                    "disable_event_timestamp": {"type": "boolean", "description": "Feast's: all history up to now"},
                    "full_feature_names": {"type": "boolean", "description": "accepted for Feast clients"},
                    "version": {"type": ["string", "null"], "description": "must name the applied version (v2)"}}},
                "IncrementalRequest": {"type": "object", "properties": {
                    "end_ts": {"type": ["string", "null"], "description": "ISO 8601; without a zone: UTC"},
                    "feature_views": {"type": ["array", "null"], "items": {"type": "string"}},
                    "full_feature_names": {"type": "boolean"},
                    "version": {"type": ["string", "null"]}}}
            }
        }
    })
}
