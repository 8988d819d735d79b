//! The OpenAPI 3.1 description of the HTTP API, served at `GET /openapi.json`.
//!
//! It is generated from the code: each handler carries its `#[utoipa::path]` (method, path,
//! parameters, bodies, answers) beside it, and `http::router` registers handlers through
//! `utoipa_axum::routes!`, which takes the method and path from that annotation. A route
//! therefore cannot be served without being described, nor described at a path it is not
//! served at. What the annotation cannot prove, that an answer's body has the schema it
//! names, schemathesis checks against a live server in CI (`scripts/api-contract.sh`).
//!
//! Shared here: the `Error` schema every JSON error has (its `code` is one of
//! [`error_code::ALL`]), the bearer-token scheme, the answers every operation may give
//! ([`Errors`]), and helpers for the handlers' annotations.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use bytes::Bytes;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder, Schema};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

use super::AppState;
use super::error_code;

/// The document's fixed parts; the paths come from the router.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "chute",
        description = "A file-upload server: streaming form uploads (`/api/files`), resumable \
            uploads (django-chunked-upload, tus 1.0 with its extensions, the IETF \
            resumable-upload draft) and upload sessions. Every error is JSON with an `error` \
            message and a stable `code`. Routes that end in a slash also answer without it, \
            and the other way round, as Django's URLs do.",
        license(name = "MIT OR Apache-2.0", identifier = "MIT OR Apache-2.0"),
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerToken),
    tags(
        (name = "files", description = "Form uploads and the caller's stored files"),
        (name = "tus", description = "tus 1.0.0 with creation, creation-with-upload, creation-defer-length, termination, expiration, checksum, checksum-trailer, concatenation and concatenation-unfinished"),
        (name = "resumable", description = "The IETF resumable-upload draft (interop version 8)"),
        (name = "chunked", description = "The django-chunked-upload protocol"),
        (name = "sessions", description = "Upload sessions (the upload.views API): validation, scanning, storing"),
        (name = "links", description = "Signed download links"),
        (name = "operations", description = "Health, readiness, metrics, the event feed and this document"),
        (name = "ui", description = "The upload page"),
    ),
)]
pub struct ApiDoc;

/// The bearer scheme: an API token (`chute token create`) or the application's signed JWT.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some(
                "An API token made by `chute token create`, or a JWT signed by the application \
                 (`jwt_*` settings)",
            ))
            .build();
        let metrics = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some("The `metrics_token` setting"))
            .build();
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme("token", SecurityScheme::Http(scheme));
        components.add_security_scheme("metrics_token", SecurityScheme::Http(metrics));
    }
}

/// The body of every JSON error. Some answers add members: a resumable upload's `offset`, a
/// refused session file's `verboseError`, and so on.
pub struct ErrorBody;

impl ToSchema for ErrorBody {
    fn name() -> std::borrow::Cow<'static, str> {
        "Error".into()
    }
}

impl PartialSchema for ErrorBody {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .property(
                "error",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(Some("What went wrong, for a person")),
            )
            .property(
                "code",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(error_code::ALL.iter().copied()))
                    .description(Some("What went wrong, for a program: stable")),
            )
            .required("error")
            .required("code")
            .additional_properties(Some(AdditionalProperties::FreeForm(true)))
            .into()
    }
}

fn error_response(description: &str) -> RefOr<utoipa::openapi::Response> {
    let json = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name(ErrorBody::name())))
        .build();
    ResponseBuilder::new()
        .description(description)
        .content("application/json", json)
        .build()
        .into()
}

/// What every operation may answer besides its own: any 4xx or 5xx, as a JSON [`ErrorBody`].
/// (The draft's 409 problems are described by its operations, `http::ietf`.)
pub struct Errors;

impl utoipa::IntoResponses for Errors {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        BTreeMap::from([
            (
                "4XX".to_string(),
                error_response("The request was refused; `code` says why (README's error table)"),
            ),
            (
                "5XX".to_string(),
                error_response(
                    "chute could not serve it now: draining (503, `Retry-After`), a hook or \
                     the scanner down, no room (507)",
                ),
            ),
        ])
    }
}

/// The document as served, made once per router (`http::router`).
#[derive(Default)]
pub struct Document(OnceLock<Bytes>);

impl Document {
    /// Keeps the router's description; the first one made wins.
    pub fn set(&self, mut doc: utoipa::openapi::OpenApi) {
        doc.info.version = env!("CARGO_PKG_VERSION").to_string();
        qualify_operation_ids(&mut doc);
        optional_byte_bodies(&mut doc);
        let json = doc.to_json().unwrap_or_else(|_| "{}".into());
        let _ = self.0.set(Bytes::from(json));
    }
}

/// Operation ids are the handlers' names, which repeat across protocols (`get`, `create`):
/// each becomes `tag.name`, `tus.get`, `links.create`, unique as OpenAPI wants them.
fn qualify_operation_ids(doc: &mut utoipa::openapi::OpenApi) {
    for item in doc.paths.paths.values_mut() {
        let ops = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ];
        for op in ops.into_iter().flatten() {
            let tag = op.tags.as_ref().and_then(|t| t.first()).cloned();
            if let (Some(tag), Some(id)) = (tag, op.operation_id.as_mut()) {
                *id = format!("{tag}.{id}");
            }
        }
    }
}

/// A byte body the protocol lets a client leave out (a creation with no bytes yet) is
/// annotated `Option<Binary>`, which utoipa renders as "null or Binary" and required. An
/// absent body is not a JSON null: it becomes a `Binary` body that is not required.
fn optional_byte_bodies(doc: &mut utoipa::openapi::OpenApi) {
    let binary = Ref::from_schema_name(Binary::name());
    for item in doc.paths.paths.values_mut() {
        let ops = [&mut item.post, &mut item.patch, &mut item.put];
        for op in ops.into_iter().flatten() {
            let Some(RefOr::T(body)) = op.request_body.as_mut() else {
                continue;
            };
            let mut optional = false;
            for content in body.content.values_mut() {
                let RefOr::T(content) = content else {
                    continue;
                };
                if let Some(RefOr::T(Schema::OneOf(one))) = &content.schema
                    && one
                        .items
                        .iter()
                        .any(|s| matches!(s, RefOr::Ref(r) if *r == binary))
                {
                    content.schema = Some(RefOr::Ref(binary.clone()));
                    optional = true;
                }
            }
            if optional {
                body.required = Some(utoipa::openapi::Required::False);
            }
        }
    }
}

/// `GET /openapi.json`
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    summary = "This document",
    responses(
        (status = 200, description = "The OpenAPI 3.1 description of every route", content_type = "application/json", body = Object),
        Errors,
    ),
)]
pub async fn document(State(state): State<AppState>) -> Response {
    match state.openapi.0.get() {
        Some(json) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            json.clone(),
        )
            .into_response(),
        None => {
            super::error::ApiError::internal("the OpenAPI document was not made").into_response()
        }
    }
}

/// Declares a unit struct whose `IntoParams` are the headers listed, for a handler's
/// `params(...)`: `(name, required, schema, description)`, the schema an [`ObjectBuilder`].
macro_rules! header_params {
    ($(#[$doc:meta])* $vis:vis $name:ident { $(($h:literal, $req:expr, $schema:expr, $desc:literal)),* $(,)? }) => {
        $(#[$doc])*
        $vis struct $name;

        impl utoipa::IntoParams for $name {
            fn into_params(
                _: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
            ) -> Vec<utoipa::openapi::path::Parameter> {
                vec![$($crate::http::openapi::header($h, $req, $schema, $desc)),*]
            }
        }
    };
}
pub(crate) use header_params;

/// A header parameter.
pub fn header(
    name: &str,
    required: bool,
    schema: ObjectBuilder,
    description: &str,
) -> utoipa::openapi::path::Parameter {
    use utoipa::openapi::Required;
    use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Header)
        .required(if required {
            Required::True
        } else {
            Required::False
        })
        .schema(Some(schema))
        .description(Some(description))
        .build()
}

/// A string.
pub fn text() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

/// A count of bytes: an integer from 0 to the largest a structured-field integer holds
/// (RFC 8941: 15 digits), which the draft's headers are.
pub fn count() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(utoipa::openapi::schema::SchemaFormat::KnownFormat(
            utoipa::openapi::KnownFormat::Int64,
        )))
        .minimum(Some(0))
        .maximum(Some(999_999_999_999_999_i64))
}

/// One of `values`.
pub fn one_of(values: &[&str]) -> ObjectBuilder {
    text().enum_values(Some(values.iter().copied()))
}

/// Bytes, any: a request or answer body that is the file itself.
pub struct Binary;

impl ToSchema for Binary {
    fn name() -> std::borrow::Cow<'static, str> {
        "Binary".into()
    }
}

impl PartialSchema for Binary {
    /// No constraint at all: any bytes are a valid body (a typed schema would let a checker
    /// call a body "invalid" that the protocol rightly takes).
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::SchemaType::AnyValue)
            .description(Some("Bytes: the file's, as they are"))
            .into()
    }
}

/// A progress id: 1-128 letters, digits, `-`, `_` or `.`.
pub fn progress_id() -> ObjectBuilder {
    text().pattern(Some("^[A-Za-z0-9._-]{1,128}$"))
}
