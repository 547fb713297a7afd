//! The statement parser: Quiver's headers token by token, view bodies through
//! `sqlparser`'s query parser.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::Path;

use sqlparser::ast::{ObjectName, ObjectNamePart, Query, Visit, Visitor};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

use super::{Definitions, EntityDecl, RequestSourceDecl, ServiceDecl, SourceDecl, ViewDecl, loc};
use crate::diagnostic::{Diagnostic, Diagnostics, FileId, Loc};
use crate::model::{
    Column, Entity, EntityKey, FeatureSelection, FeatureService, FeatureView, KeyType,
    RequestSource, Source, SourceFormat, Ttl, check_name, request_field_type,
};

const DIALECT: GenericDialect = GenericDialect {};

pub(super) fn parse_statements(
    defs: &mut Definitions,
    file: FileId,
    text: &str,
    repo_root: &Path,
    diagnostics: &mut Diagnostics,
) {
    let tokens = match Tokenizer::new(&DIALECT, text).tokenize_with_location() {
        Ok(tokens) => tokens,
        Err(e) => {
            let at = Loc {
                file,
                line: e.location.line,
                column: e.location.column,
                width: 1,
            };
            diagnostics.push(defs.error_at(at, format!("syntax error: {}", e.message)));
            return;
        }
    };
    let mut p = StatementParser {
        parser: Parser::new(&DIALECT).with_tokens_with_locations(tokens),
        file,
        text,
        repo_root,
    };
    loop {
        while p.parser.consume_token(&Token::SemiColon) {}
        if p.peek().token == Token::EOF {
            break;
        }
        let result = p.statement(defs);
        let result = result.and_then(|()| p.end_of_statement());
        if let Err(error) = result {
            diagnostics.push(error.into_diagnostic(defs));
            p.skip_to_next_statement();
        }
    }
}

/// A parse error: where and what.
pub(super) struct ParseError {
    at: Loc,
    message: String,
    help: Option<String>,
}

impl ParseError {
    fn into_diagnostic(self, defs: &Definitions) -> Diagnostic {
        let d = defs.error_at(self.at, self.message);
        match self.help {
            Some(help) => d.with_help(help),
            None => d,
        }
    }

    fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

type PResult<T> = Result<T, ParseError>;

struct StatementParser<'a> {
    parser: Parser<'a>,
    file: FileId,
    text: &'a str,
    repo_root: &'a Path,
}

impl StatementParser<'_> {
    fn peek(&self) -> TokenWithSpan {
        self.parser.peek_token()
    }

    fn loc_of(&self, token: &TokenWithSpan) -> Loc {
        if token.span.start.line == 0 {
            // The tokenizer gives the end of file no position: point after the last character.
            return self.end_of_file();
        }
        loc(self.file, token.span)
    }

    /// The position just after the last non-blank character of the file.
    fn end_of_file(&self) -> Loc {
        let text = self.text.trim_end();
        let line = text.lines().count().max(1) as u64;
        let column = text.lines().last().map_or(0, |l| l.chars().count()) as u64 + 1;
        Loc {
            file: self.file,
            line,
            column,
            width: 1,
        }
    }

    fn here(&self) -> Loc {
        self.loc_of(&self.peek())
    }

    fn error(&self, at: Loc, message: impl Into<String>) -> ParseError {
        ParseError {
            at,
            message: message.into(),
            help: None,
        }
    }

    /// "expected X, found `y`" at the next token.
    fn expected<T>(&self, expected: &str) -> PResult<T> {
        let token = self.peek();
        Err(self.error(
            self.loc_of(&token),
            format!("expected {expected}, found {}", describe(&token.token)),
        ))
    }

    /// The next token's word, upper-cased, when it is an unquoted word.
    fn peek_keyword(&self) -> Option<String> {
        match self.peek().token {
            Token::Word(w) if w.quote_style.is_none() => Some(w.value.to_ascii_uppercase()),
            _ => None,
        }
    }

    fn eat_keyword(&mut self, keyword: &str) -> bool {
        if self.peek_keyword().as_deref() == Some(keyword) {
            self.parser.next_token();
            true
        } else {
            false
        }
    }

    fn expect_token(&mut self, token: Token) -> PResult<Loc> {
        let next = self.peek();
        if next.token == token {
            self.parser.next_token();
            Ok(self.loc_of(&next))
        } else {
            self.expected(&format!("`{token}`"))
        }
    }

    /// A name: unquoted names are lower-cased (as DataFusion does), quoted ones kept.
    fn name(&mut self, what: &str) -> PResult<(String, Loc)> {
        let token = self.peek();
        match &token.token {
            Token::Word(w) => {
                self.parser.next_token();
                let value = if w.quote_style.is_some() {
                    w.value.clone()
                } else {
                    w.value.to_ascii_lowercase()
                };
                Ok((value, self.loc_of(&token)))
            }
            _ => self.expected(what),
        }
    }

    /// The name of a new object: a [`name`](Self::name) that must also be an identifier
    /// ([`check_name`]), because it becomes a folder, a key prefix and a metric label.
    fn object_name(&mut self, what: &str) -> PResult<(String, Loc)> {
        let (name, at) = self.name(what)?;
        check_name(&name).map_err(|message| {
            self.error(at, format!("invalid name: {message}"))
                .with_help("names are letters, digits and `_`, start with a letter or `_`, and have at most 128 characters (255 bytes)")
        })?;
        Ok((name, at))
    }

    /// A single-quoted string literal.
    fn string(&mut self, what: &str) -> PResult<(String, Loc)> {
        let token = self.peek();
        match &token.token {
            Token::SingleQuotedString(s) => {
                self.parser.next_token();
                Ok((s.clone(), self.loc_of(&token)))
            }
            _ => self.expected(what),
        }
    }

    fn boolean(&mut self, what: &str) -> PResult<bool> {
        match self.peek_keyword().as_deref() {
            Some("TRUE") => {
                self.parser.next_token();
                Ok(true)
            }
            Some("FALSE") => {
                self.parser.next_token();
                Ok(false)
            }
            _ => self.expected(what),
        }
    }

    /// A positive duration (`'7 days'`), in seconds.
    fn duration(&self, text: &str, at: Loc, what: &str) -> PResult<u64> {
        match crate::model::parse_duration(text) {
            Ok(0) => Err(self.error(at, format!("a {what} must be positive"))),
            Ok(seconds) => Ok(seconds),
            Err(e) => Err(self
                .error(at, format!("bad {what} '{text}': {e}"))
                .with_help("write a duration such as '5 minutes', '1 hour' or '7 days'")),
        }
    }

    /// `(k = 'v', …)`, used by `TAGS` and `OPTIONS`.
    fn key_values(&mut self, clause: &str) -> PResult<BTreeMap<String, String>> {
        self.expect_token(Token::LParen)?;
        let mut map = BTreeMap::new();
        if self.parser.consume_token(&Token::RParen) {
            return Ok(map);
        }
        loop {
            let (key, key_at) = self.name(&format!("a {clause} key"))?;
            self.expect_token(Token::Eq)?;
            let (value, _) = self.string(&format!("a quoted value for {clause} key `{key}`"))?;
            if map.insert(key.clone(), value).is_some() {
                return Err(self.error(key_at, format!("{clause} key `{key}` is given twice")));
            }
            if self.parser.consume_token(&Token::RParen) {
                return Ok(map);
            }
            self.expect_token(Token::Comma)?;
        }
    }

    /// The clauses of a statement that takes only `COMMENT '…'` (entities, request
    /// sources, services): the comment, if given.
    fn comment_clause(&mut self) -> PResult<Option<String>> {
        let mut comment = None;
        while let Some(keyword) = self.peek_keyword() {
            let clause_at = self.here();
            match keyword.as_str() {
                "COMMENT" => {
                    self.once(&comment, "COMMENT", clause_at)?;
                    self.parser.next_token();
                    comment = Some(self.string("a quoted comment")?.0);
                }
                _ => return self.expected("COMMENT or `;`"),
            }
        }
        Ok(comment)
    }

    /// Fails when a clause appears a second time.
    fn once<T>(&self, slot: &Option<T>, clause: &str, at: Loc) -> PResult<()> {
        if slot.is_some() {
            Err(self.error(at, format!("{clause} is given twice")))
        } else {
            Ok(())
        }
    }

    fn end_of_statement(&mut self) -> PResult<()> {
        let token = self.peek();
        match token.token {
            Token::SemiColon | Token::EOF => Ok(()),
            _ => self.expected("`;` at the end of the statement"),
        }
    }

    /// Error recovery: drop tokens up to and including the next `;`.
    fn skip_to_next_statement(&mut self) {
        loop {
            match self.parser.next_token().token {
                Token::SemiColon | Token::EOF => return,
                _ => {}
            }
        }
    }

    fn statement(&mut self, defs: &mut Definitions) -> PResult<()> {
        const WHAT: &str = "CREATE ENTITY, CREATE SOURCE, CREATE REQUEST SOURCE, CREATE FEATURE VIEW or CREATE FEATURE SERVICE";
        if !self.eat_keyword("CREATE") {
            return self.expected(WHAT);
        }
        match self.peek_keyword().as_deref() {
            Some("ENTITY") => {
                self.parser.next_token();
                let entity = self.entity()?;
                defs.entities.push(entity);
            }
            Some("SOURCE") => {
                self.parser.next_token();
                let source = self.source()?;
                defs.sources.push(source);
            }
            Some("REQUEST") => {
                self.parser.next_token();
                if !self.eat_keyword("SOURCE") {
                    return self.expected("SOURCE after CREATE REQUEST");
                }
                let source = self.request_source()?;
                defs.request_sources.push(source);
            }
            Some("FEATURE") => {
                self.parser.next_token();
                if self.eat_keyword("VIEW") {
                    let view = self.view()?;
                    defs.views.push(view);
                } else if self.eat_keyword("SERVICE") {
                    let service = self.service()?;
                    defs.services.push(service);
                } else {
                    return self.expected("VIEW or SERVICE after CREATE FEATURE");
                }
            }
            _ => {
                return self.expected(&format!(
                    "ENTITY, SOURCE, REQUEST SOURCE, FEATURE VIEW or FEATURE SERVICE after CREATE ({WHAT})"
                ));
            }
        }
        Ok(())
    }

    /// `CREATE ENTITY name (key TYPE [, key TYPE…]) [COMMENT '…']`
    fn entity(&mut self) -> PResult<EntityDecl> {
        let (name, at) = self.object_name("an entity name")?;
        self.expect_token(Token::LParen)?;
        let mut keys: Vec<EntityKey> = Vec::new();
        let mut key_locs = Vec::new();
        loop {
            let (key, key_at) = self.name("a key column name")?;
            if keys.iter().any(|k| k.name == key) {
                return Err(self.error(
                    key_at,
                    format!("key column `{key}` is declared twice in entity `{name}`"),
                ));
            }
            let (type_name, type_at) = self.name("a key type (BIGINT, INT, VARCHAR or BYTES)")?;
            // Tolerate a length such as VARCHAR(64): keys have no length limit.
            if self.parser.consume_token(&Token::LParen) {
                while !self.parser.consume_token(&Token::RParen) {
                    if self.peek().token == Token::EOF {
                        return self.expected("`)`");
                    }
                    self.parser.next_token();
                }
            }
            let Some(key_type) = KeyType::from_sql(&type_name) else {
                return Err(self
                    .error(
                        type_at,
                        format!(
                            "type `{}` cannot be an entity key",
                            type_name.to_ascii_uppercase()
                        ),
                    )
                    .with_help("use BIGINT, INT, VARCHAR (STRING) or BYTES (BINARY)"));
            };
            keys.push(EntityKey {
                name: key,
                key_type,
            });
            key_locs.push(key_at);
            if self.parser.consume_token(&Token::RParen) {
                break;
            }
            if !self.parser.consume_token(&Token::Comma) {
                return self.expected("`,` or `)` in the key list");
            }
        }
        let comment = self.comment_clause()?;
        Ok(EntityDecl {
            def: Entity {
                name,
                keys,
                comment,
            },
            at,
            key_locs,
        })
    }

    /// `CREATE SOURCE name FROM 'path' [FORMAT f] TIMESTAMP col [CREATED col]
    ///  [OPTIONS (k = 'v', …)] [COMMENT '…']`, clauses in any order.
    fn source(&mut self) -> PResult<SourceDecl> {
        let (name, at) = self.object_name("a source name")?;
        let mut path: Option<(String, Loc)> = None;
        let mut format: Option<SourceFormat> = None;
        let mut timestamp: Option<(String, Loc)> = None;
        let mut created: Option<(String, Loc)> = None;
        let mut options: Option<BTreeMap<String, String>> = None;
        let mut comment: Option<String> = None;
        while let Some(keyword) = self.peek_keyword() {
            let clause_at = self.here();
            match keyword.as_str() {
                "FROM" => {
                    self.once(&path, "FROM", clause_at)?;
                    self.parser.next_token();
                    path =
                        Some(self.string("a quoted path after FROM, e.g. 'data/events.parquet'")?);
                }
                "FORMAT" => {
                    self.once(&format, "FORMAT", clause_at)?;
                    self.parser.next_token();
                    let (value, value_at) = self.name("a format: parquet, csv or json")?;
                    format = Some(SourceFormat::parse(&value).ok_or_else(|| {
                        self.error(value_at, format!("unknown format `{value}`"))
                            .with_help("use parquet, csv or json")
                    })?);
                }
                "TIMESTAMP" => {
                    self.once(&timestamp, "TIMESTAMP", clause_at)?;
                    self.parser.next_token();
                    timestamp = Some(self.name("the event timestamp column name")?);
                }
                "CREATED" => {
                    self.once(&created, "CREATED", clause_at)?;
                    self.parser.next_token();
                    created = Some(self.name("the created timestamp column name")?);
                }
                "OPTIONS" => {
                    self.once(&options, "OPTIONS", clause_at)?;
                    self.parser.next_token();
                    options = Some(self.key_values("OPTIONS")?);
                }
                "COMMENT" => {
                    self.once(&comment, "COMMENT", clause_at)?;
                    self.parser.next_token();
                    comment = Some(self.string("a quoted comment")?.0);
                }
                _ => {
                    return self
                        .expected("FROM, FORMAT, TIMESTAMP, CREATED, OPTIONS, COMMENT or `;`");
                }
            }
        }
        let Some((path, path_at)) = path else {
            return Err(self
                .error(at, format!("source `{name}` has no FROM clause"))
                .with_help("add FROM 'path/to/data.parquet' (a file, a folder or a glob)"));
        };
        let Some((timestamp, timestamp_at)) = timestamp else {
            return Err(self
                .error(at, format!("source `{name}` has no TIMESTAMP clause"))
                .with_help("add TIMESTAMP <column> naming the event-time column"));
        };
        let format = match format {
            Some(format) => format,
            None => infer_format(self.repo_root, &path).ok_or_else(|| {
                self.error(path_at, format!("cannot tell the format of `{path}`"))
                    .with_help("add FORMAT parquet, FORMAT csv or FORMAT json")
            })?,
        };
        let options = options.unwrap_or_default();
        check_options(format, &options).map_err(|message| self.error(at, message))?;
        let (created, created_at) = match created {
            Some((c, l)) => (Some(c), Some(l)),
            None => (None, None),
        };
        Ok(SourceDecl {
            def: Source {
                name,
                path,
                format,
                timestamp,
                created,
                options,
                comment,
            },
            at,
            path_at,
            timestamp_at,
            created_at,
        })
    }

    /// `CREATE REQUEST SOURCE name (field TYPE [, field TYPE…]) [COMMENT '…']`
    fn request_source(&mut self) -> PResult<RequestSourceDecl> {
        const TYPES: &str = "BIGINT, INT, DOUBLE, FLOAT, BOOLEAN, VARCHAR or TIMESTAMP";
        let (name, at) = self.object_name("a request source name")?;
        self.expect_token(Token::LParen)?;
        let mut fields: Vec<Column> = Vec::new();
        let mut field_locs = Vec::new();
        loop {
            let (field, field_at) = self.name("a field name")?;
            if fields.iter().any(|f| f.name == field) {
                return Err(self.error(
                    field_at,
                    format!("field `{field}` is declared twice in request source `{name}`"),
                ));
            }
            let (mut type_name, type_at) = self.name(&format!("a field type ({TYPES})"))?;
            if type_name.eq_ignore_ascii_case("DOUBLE") && self.eat_keyword("PRECISION") {
                type_name.push_str(" PRECISION");
            }
            // Tolerate a length such as VARCHAR(64).
            if self.parser.consume_token(&Token::LParen) {
                while !self.parser.consume_token(&Token::RParen) {
                    if self.peek().token == Token::EOF {
                        return self.expected("`)`");
                    }
                    self.parser.next_token();
                }
            }
            let Some(data_type) = request_field_type(&type_name) else {
                return Err(self
                    .error(
                        type_at,
                        format!(
                            "type `{}` cannot be a request field",
                            type_name.to_ascii_uppercase()
                        ),
                    )
                    .with_help(format!("use {TYPES}")));
            };
            fields.push(Column {
                name: field,
                data_type: data_type.to_string(),
                nullable: true,
            });
            field_locs.push(field_at);
            if self.parser.consume_token(&Token::RParen) {
                break;
            }
            if !self.parser.consume_token(&Token::Comma) {
                return self.expected("`,` or `)` in the field list");
            }
        }
        let comment = self.comment_clause()?;
        Ok(RequestSourceDecl {
            def: RequestSource {
                name,
                fields,
                comment,
            },
            at,
            field_locs,
        })
    }

    /// `CREATE FEATURE VIEW name ENTITY e [, e…] [TTL '…'] [TAGS (…)] [OWNER '…']
    ///  [COMMENT '…'] [ONLINE true|false] AS SELECT …`
    fn view(&mut self) -> PResult<ViewDecl> {
        let (name, at) = self.object_name("a feature view name")?;
        let mut entities: Option<Vec<(String, Loc)>> = None;
        let mut ttl: Option<Ttl> = None;
        let mut tags: Option<BTreeMap<String, String>> = None;
        let mut owner: Option<String> = None;
        let mut comment: Option<String> = None;
        let mut online: Option<bool> = None;
        let mut windows: Option<(Vec<u64>, Loc)> = None;
        let mut hop: Option<(u64, Loc)> = None;
        let mut ttl_at: Option<Loc> = None;
        let mut online_at: Option<Loc> = None;
        let mut on_demand: Option<Loc> = None;
        loop {
            let clause_at = self.here();
            match self.peek_keyword().as_deref() {
                Some("ON") => {
                    self.once(&on_demand, "ON DEMAND", clause_at)?;
                    self.parser.next_token();
                    if !self.eat_keyword("DEMAND") {
                        return self.expected("DEMAND after ON");
                    }
                    on_demand = Some(clause_at);
                }
                Some("WINDOWS") => {
                    self.once(&windows, "WINDOWS", clause_at)?;
                    self.parser.next_token();
                    self.expect_token(Token::LParen)?;
                    let mut list: Vec<u64> = Vec::new();
                    loop {
                        let (text, text_at) =
                            self.string("a quoted window length, e.g. '7 days'")?;
                        let seconds = self.duration(&text, text_at, "window")?;
                        if list.contains(&seconds) {
                            return Err(
                                self.error(text_at, format!("the window '{text}' is listed twice"))
                            );
                        }
                        list.push(seconds);
                        if self.parser.consume_token(&Token::RParen) {
                            break;
                        }
                        self.expect_token(Token::Comma)?;
                    }
                    windows = Some((list, clause_at));
                }
                Some("HOP") => {
                    self.once(&hop, "HOP", clause_at)?;
                    self.parser.next_token();
                    let (text, text_at) = self.string("a quoted hop, e.g. '5 minutes'")?;
                    let seconds = self.duration(&text, text_at, "hop")?;
                    if !crate::window::DAY.is_multiple_of(seconds) {
                        return Err(self
                            .error(text_at, format!("HOP '{text}' does not divide a day"))
                            .with_help(
                                "tiles never cross a day: use a hop such as '1 minute', '5 minutes', '15 minutes', '1 hour' or '1 day'",
                            ));
                    }
                    hop = Some((seconds, text_at));
                }
                Some("ENTITY" | "ENTITIES") => {
                    self.once(&entities, "ENTITY", clause_at)?;
                    self.parser.next_token();
                    let mut list = vec![self.name("an entity name")?];
                    while self.parser.consume_token(&Token::Comma) {
                        list.push(self.name("an entity name")?);
                    }
                    entities = Some(list);
                }
                Some("TTL") => {
                    self.once(&ttl, "TTL", clause_at)?;
                    ttl_at = Some(clause_at);
                    self.parser.next_token();
                    let (text, text_at) =
                        self.string("a quoted duration after TTL, e.g. '1 day'")?;
                    ttl = Some(Ttl::parse(&text).map_err(|e| {
                        self.error(text_at, format!("bad TTL '{text}': {e}"))
                            .with_help(
                                "write a duration such as '1 day', '12 hours' or '1 day 12 hours'",
                            )
                    })?);
                }
                Some("TAGS") => {
                    self.once(&tags, "TAGS", clause_at)?;
                    self.parser.next_token();
                    tags = Some(self.key_values("TAGS")?);
                }
                Some("OWNER") => {
                    self.once(&owner, "OWNER", clause_at)?;
                    self.parser.next_token();
                    owner = Some(self.string("a quoted owner")?.0);
                }
                Some("COMMENT") => {
                    self.once(&comment, "COMMENT", clause_at)?;
                    self.parser.next_token();
                    comment = Some(self.string("a quoted comment")?.0);
                }
                Some("ONLINE") => {
                    self.once(&online, "ONLINE", clause_at)?;
                    online_at = Some(clause_at);
                    self.parser.next_token();
                    online = Some(self.boolean("true or false after ONLINE")?);
                }
                Some("AS") => {
                    self.parser.next_token();
                    break;
                }
                _ => {
                    return self.expected(
                        "ENTITY, TTL, WINDOWS, HOP, ON DEMAND, TAGS, OWNER, COMMENT, ONLINE or AS SELECT …",
                    );
                }
            }
        }
        if on_demand.is_some() {
            // What an on-demand view cannot have: it has no rows of its own.
            let conflict = [
                (
                    entities.as_ref().and_then(|e| e.first().map(|(_, at)| *at)),
                    "ENTITY",
                    "its entities are those of the views it reads",
                ),
                (ttl_at, "TTL", "the TTLs of the views it reads apply"),
                (
                    windows.as_ref().map(|(_, at)| *at),
                    "WINDOWS",
                    "read an aggregation view's features instead",
                ),
                (
                    hop.as_ref().map(|(_, at)| *at),
                    "HOP",
                    "read an aggregation view's features instead",
                ),
                (
                    online_at,
                    "ONLINE",
                    "it is computed at request time, never stored",
                ),
            ];
            if let Some((Some(at), clause, why)) =
                conflict.into_iter().find(|(at, _, _)| at.is_some())
            {
                return Err(self
                    .error(
                        at,
                        format!("on-demand feature view `{name}` cannot have {clause}"),
                    )
                    .with_help(format!("leave out {clause}: {why}")));
            }
        }
        let windows = match (windows, hop, ttl_at) {
            (Some(_), _, Some(at)) => {
                return Err(self
                    .error(at, format!("feature view `{name}` has WINDOWS and a TTL"))
                    .with_help(
                        "leave out TTL: the windows say how far back an aggregation view looks",
                    ));
            }
            (None, Some((_, at)), _) => {
                return Err(self
                    .error(
                        at,
                        format!("feature view `{name}` has a HOP but no WINDOWS"),
                    )
                    .with_help("HOP sets the tile size of WINDOWS ('1 hour', …)"));
            }
            (Some((list, _)), Some((hop, at)), _) => {
                let smallest = list.iter().copied().min().unwrap_or(hop);
                if hop > smallest {
                    return Err(self
                        .error(
                            at,
                            format!(
                                "HOP is longer than the smallest window ({})",
                                crate::model::Ttl::from_seconds(smallest)
                            ),
                        )
                        .with_help("a hop is at most the smallest window"));
                }
                list
            }
            (Some((list, _)), None, _) => list,
            (None, None, _) => Vec::new(),
        };
        let entities = match (entities, on_demand) {
            (Some(entities), _) => entities,
            (None, Some(_)) => Vec::new(), // filled in from its input views at apply
            (None, None) => {
                return Err(self
                    .error(at, format!("feature view `{name}` has no ENTITY clause"))
                    .with_help(
                        "add ENTITY <entity name> before AS (or ON DEMAND for request-time features)",
                    ));
            }
        };
        let query_at = self.here();
        let query_start = query_at;
        let query = self.parser.parse_query().map_err(|e| self.query_error(e))?;
        let end = self.here();
        let text = slice(self.text, query_start, end).trim().to_string();
        let (sources, source_locs) = relations(&query, self.file);
        let (entities, entity_locs) = entities.into_iter().unzip();
        Ok(ViewDecl {
            def: FeatureView {
                name,
                entities,
                ttl,
                tags: tags.unwrap_or_default(),
                owner,
                comment,
                online: online.unwrap_or(on_demand.is_none()),
                query: text,
                normalized_query: query.to_string(),
                sources,
                windows,
                hop: hop.map(|(seconds, _)| seconds),
                on_demand: on_demand.is_some(),
            },
            at,
            entity_locs,
            source_locs,
            query_at,
        })
    }

    /// `CREATE FEATURE SERVICE name (view.feature, view.*, …) [COMMENT '…']`
    fn service(&mut self) -> PResult<ServiceDecl> {
        let (name, at) = self.object_name("a feature service name")?;
        self.expect_token(Token::LParen)?;
        let mut features = Vec::new();
        let mut feature_locs = Vec::new();
        loop {
            let (reference, view_at) =
                self.name("a feature reference such as view.feature or view.*")?;
            // `view@v2` pins a version (the tokenizer reads it as one word).
            let (view, version) = match reference.split_once('@') {
                None => (reference, None),
                Some((view, pin)) => {
                    let version = pin
                        .strip_prefix(['v', 'V'])
                        .and_then(|n| n.parse::<u32>().ok())
                        .filter(|n| *n > 0)
                        .ok_or_else(|| {
                            self.error(view_at, format!("bad version pin `@{pin}` on `{view}`"))
                                .with_help("pin a view version as view@v2.feature")
                        })?;
                    (view.to_string(), Some(version))
                }
            };
            self.expect_token(Token::Period).map_err(|e| {
                e.with_help("reference features as view.feature, or view.* for all of a view")
            })?;
            let feature = if self.parser.consume_token(&Token::Mul) {
                None
            } else {
                Some(self.name("a feature name or `*` after the view name")?.0)
            };
            let end = self.here();
            let width = if end.line == view_at.line && end.column > view_at.column {
                end.column - view_at.column
            } else {
                view_at.width
            };
            features.push(FeatureSelection {
                view,
                version,
                feature,
            });
            feature_locs.push(Loc { width, ..view_at });
            if self.parser.consume_token(&Token::RParen) {
                break;
            }
            if !self.parser.consume_token(&Token::Comma) {
                return self.expected("`,` or `)` in the feature list");
            }
        }
        let comment = self.comment_clause()?;
        Ok(ServiceDecl {
            def: FeatureService {
                name,
                features,
                comment,
            },
            at,
            feature_locs,
        })
    }

    /// Turns a `sqlparser` error inside a view body into a located error.
    fn query_error(&self, error: ParserError) -> ParseError {
        let message = match error {
            ParserError::TokenizerError(m) | ParserError::ParserError(m) => m,
            ParserError::RecursionLimitExceeded => "the query is nested too deeply".to_string(),
        };
        let (message, at) = match split_location(&message) {
            Some((message, 0, _)) => (message, self.end_of_file()),
            Some((message, line, column)) => (
                message,
                Loc {
                    file: self.file,
                    line,
                    column,
                    width: 1,
                },
            ),
            None => (message, self.here()),
        };
        self.error(at, format!("syntax error in the view query: {message}"))
    }
}

/// `sqlparser` appends " at Line: 3, Column: 5" to its messages; split it off.
fn split_location(message: &str) -> Option<(String, u64, u64)> {
    let (text, position) = message.rsplit_once(" at Line: ")?;
    let (line, column) = position.split_once(", Column: ")?;
    Some((
        text.to_string(),
        line.trim().parse().ok()?,
        column.trim().parse().ok()?,
    ))
}

/// How a token reads in an error message.
fn describe(token: &Token) -> String {
    match token {
        Token::EOF => "end of file".to_string(),
        Token::SingleQuotedString(s) => format!("string '{s}'"),
        other => format!("`{other}`"),
    }
}

/// The text between two locations (start inclusive, end exclusive).
fn slice(text: &str, start: Loc, end: Loc) -> &str {
    let offset = |l: Loc| -> usize {
        let mut line_start = 0;
        for _ in 1..l.line {
            match text[line_start..].find('\n') {
                Some(i) => line_start += i + 1,
                None => return text.len(),
            }
        }
        text[line_start..]
            .char_indices()
            .nth(l.column.saturating_sub(1) as usize)
            .map(|(i, _)| line_start + i)
            .unwrap_or(text.len())
    };
    let (a, b) = (
        offset(start),
        if end.line == 0 {
            text.len()
        } else {
            offset(end)
        },
    );
    if a <= b { &text[a..b] } else { "" }
}

/// The tables a query reads, in order of first appearance, minus its own CTE names.
fn relations(query: &Query, file: FileId) -> (Vec<String>, Vec<Loc>) {
    struct Relations {
        ctes: Vec<String>,
        found: Vec<(String, Loc)>,
        file: FileId,
    }
    impl Visitor for Relations {
        type Break = ();
        fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
            if let Some(with) = &query.with {
                for cte in &with.cte_tables {
                    self.ctes
                        .push(normalize(&cte.alias.name.value, cte.alias.name.quote_style));
                }
            }
            ControlFlow::Continue(())
        }
        fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
            let parts: Vec<_> = relation
                .0
                .iter()
                .filter_map(|p| match p {
                    ObjectNamePart::Identifier(i) => Some(i),
                    _ => None,
                })
                .collect();
            if let Some(ident) = parts.last() {
                let name = normalize(&ident.value, ident.quote_style);
                let first = parts[0];
                let at = Loc {
                    file: self.file,
                    line: first.span.start.line,
                    column: first.span.start.column,
                    width: relation.to_string().chars().count() as u64,
                };
                self.found.push((name, at));
            }
            ControlFlow::Continue(())
        }
    }
    let mut visitor = Relations {
        ctes: Vec::new(),
        found: Vec::new(),
        file,
    };
    let _ = query.visit(&mut visitor);
    let mut names = Vec::new();
    let mut locs = Vec::new();
    for (name, at) in visitor.found {
        if !visitor.ctes.contains(&name) && !names.contains(&name) {
            names.push(name);
            locs.push(at);
        }
    }
    (names, locs)
}

fn normalize(value: &str, quote: Option<char>) -> String {
    if quote.is_some() {
        value.to_string()
    } else {
        value.to_ascii_lowercase()
    }
}

/// The format of a source: from the extension of its path (or glob), else from the
/// files in the folder it names.
fn infer_format(repo_root: &Path, path: &str) -> Option<SourceFormat> {
    if let Some(format) = SourceFormat::from_extension(path) {
        return Some(format);
    }
    let dir = repo_root.join(path);
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .collect();
    entries.sort_by_key(|e| e.file_name());
    entries
        .iter()
        .find_map(|e| SourceFormat::from_extension(&e.file_name().to_string_lossy()))
}

/// Reader options Quiver knows, per format.
fn check_options(format: SourceFormat, options: &BTreeMap<String, String>) -> Result<(), String> {
    let allowed: &[&str] = match format {
        SourceFormat::Csv => &["delimiter", "has_header"],
        SourceFormat::Parquet | SourceFormat::Json => &[],
    };
    for (key, value) in options {
        if !allowed.contains(&key.as_str()) {
            return Err(if allowed.is_empty() {
                format!(
                    "unknown option `{key}`: {} sources take no OPTIONS",
                    format.as_str()
                )
            } else {
                format!(
                    "unknown option `{key}` for a {} source; known options: {}",
                    format.as_str(),
                    allowed.join(", ")
                )
            });
        }
        match key.as_str() {
            "delimiter" if value.len() != 1 => {
                return Err(format!(
                    "option `delimiter` must be one character, not '{value}'"
                ));
            }
            "has_header" if !matches!(value.as_str(), "true" | "false") => {
                return Err(format!(
                    "option `has_header` must be 'true' or 'false', not '{value}'"
                ));
            }
            _ => {}
        }
    }
    Ok(())
}
