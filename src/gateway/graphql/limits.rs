//! Bounds on what one GraphQL request may cost, checked before juniper validates or executes
//! it (DESIGN.md decision 17). juniper's parser, validator and executor recurse and expand
//! fragments, so an unchecked document can overflow the stack (selections nested a thousand
//! deep), keep a worker busy for ever (fragments that spread the next one twice: 2^n fields)
//! or build answers of hundreds of megabytes (thousands of aliases, lists of lists).
//!
//! Two checks, each linear in the document, run in this order:
//!
//! 1. [`scan`]: one pass over juniper's own lexer tokens, without recursion: bracket nesting
//!    and token count (so juniper's recursive descent parser stays shallow), and the kinds
//!    of the operations the document defines.
//! 2. [`Bounds::check`] on the document juniper's parser made: the depth, the number of
//!    selections and the estimated cost of every operation and fragment, with fragments
//!    expanded by counting (each fragment is measured once and its numbers reused at every
//!    spread; cycles are refused), aliases counted as the separate fields they are, and list
//!    fields weighted by their length: a paged list by its `limit` (clamped as the resolver
//!    clamps it), an unpaged one by the cap every unpaged list has.
//!
//! The handler adds the last two bounds: a time limit on execution and a size limit on the
//! answer. Limits are constants rather than settings: they sit far above what the official
//! clients and the web UI send (their largest query costs about 31 000, the next 6 000) and
//! far below what hurts.

use crate::store::sessions::UNPAGED_LIMIT;
use juniper::meta::MetaType;
use juniper::parser::{Lexer, Token};
use juniper::{
    Definition, InputValue, OperationType, ScalarValue, SchemaType, Selection, Spanning, Type,
    Variables,
};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// Brackets of any kind (`{`, `[`, `(`) open at once. The deepest legitimate document nests
/// five; juniper's parser overflowed a worker's stack at about 1 000.
pub const MAX_NESTING: usize = 32;
/// Tokens in a document; the longest legitimate one has a few hundred.
pub const MAX_TOKENS: usize = 10_000;
/// Nested selections (fields, spreads and inline fragments) with fragments expanded.
/// Clients nest four; juniper's introspection query nests eighteen.
pub const MAX_DEPTH: u64 = 24;
/// Selections in the whole document with fragments expanded and aliases counted. juniper's
/// validation compares same-named fields pairwise, so this also bounds its quadratic part.
pub const MAX_SELECTIONS: u64 = 1_000;
/// The estimated cost of one operation or fragment: answer values, each multiplied by the
/// length of the lists around it, plus [`STORE_WEIGHT`] for every database read.
pub const MAX_COST: u64 = 50_000;
/// The largest answer body; the largest legitimate one is well under a megabyte.
pub const MAX_ANSWER_BYTES: usize = 8 << 20;
/// Execution time of one request; legitimate queries take milliseconds.
pub const EXECUTION_TIMEOUT: Duration = Duration::from_secs(10);

/// The most rows an unpaged list returns, and the largest page (the resolvers clamp both).
pub const LIST_CAP: u64 = UNPAGED_LIMIT as u64;
/// The assumed length of lists that are not rows of the store (an image's labels, aliases
/// and limits, introspection); they are small and come from the administrator.
const SMALL_LIST: u64 = 10;
/// A resolver that reads the store (every root field, and the nested lists below).
const STORE_WEIGHT: u64 = 100;
/// A `JSONString` value: a whole document (statistics, slots), not one short scalar.
const DOCUMENT_WEIGHT: u64 = 10;
/// Nested fields whose resolver reads a list from the store for every parent object.
const STORE_LISTS: &[(&str, &str)] = &[
    ("User", "groups"),
    ("KeyPair", "vfolders"),
    ("KeyPair", "compute_sessions"),
    ("ComputeSession", "workers"),
    ("Agent", "computations"),
];

/// A document over one of the bounds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("the query nests brackets more than {MAX_NESTING} levels deep")]
    Nesting,
    #[error("the query is longer than {MAX_TOKENS} tokens")]
    Tokens,
    #[error("the query nests selections {0} levels deep with fragments expanded; at most {MAX_DEPTH} are allowed")]
    Depth(u64),
    #[error("the query has {0} selections with fragments expanded and aliases counted; at most {MAX_SELECTIONS} are allowed")]
    Selections(u64),
    #[error("the query's estimated cost is {0} (answer values weighted by list lengths, plus database reads); at most {MAX_COST} is allowed: ask for fewer fields or aliases, or smaller pages")]
    Cost(u64),
    #[error("fragment {0} spreads itself")]
    FragmentCycle(String),
}

/// The kind of an operation a document defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Query,
    Mutation,
    Subscription,
}

/// One pass over the document's tokens: refuses deep nesting and overlong documents before
/// anything recursive sees them, and returns the kinds of the operations defined (at the top
/// level, outside selections, strings and comments).
///
/// A token juniper's lexer cannot read ends the scan: juniper's parser stops with an error
/// at the same token, having nested no deeper than the scan saw.
pub fn scan(doc: &str) -> Result<Vec<Kind>, LimitError> {
    let mut kinds = Vec::new();
    let mut depth = 0usize;
    // At the top level, before the first token of a definition.
    let mut at_definition = true;
    for (count, token) in Lexer::new(doc).enumerate() {
        let Ok(token) = token else { break };
        if count >= MAX_TOKENS {
            return Err(LimitError::Tokens);
        }
        match token.item {
            Token::EndOfFile => break,
            Token::CurlyOpen | Token::BracketOpen | Token::ParenOpen => {
                if depth == 0 && at_definition && matches!(token.item, Token::CurlyOpen) {
                    kinds.push(Kind::Query); // the shorthand `{ … }`
                }
                at_definition = false;
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(LimitError::Nesting);
                }
            }
            Token::CurlyClose | Token::BracketClose | Token::ParenClose => {
                depth = depth.saturating_sub(1);
                // A definition ends with the `}` of its selection set.
                at_definition = depth == 0 && matches!(token.item, Token::CurlyClose);
            }
            Token::Name(word) if depth == 0 && at_definition => {
                match word {
                    "query" => kinds.push(Kind::Query),
                    "mutation" => kinds.push(Kind::Mutation),
                    "subscription" => kinds.push(Kind::Subscription),
                    _ => {}
                }
                at_definition = false;
            }
            _ => at_definition = false,
        }
    }
    Ok(kinds)
}

/// What a selection set amounts to, fragments expanded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Measure {
    depth: u64,
    selections: u64,
    cost: u64,
}

impl Measure {
    /// Adds a sibling selection.
    fn and(self, other: Measure) -> Measure {
        Measure {
            depth: self.depth.max(other.depth),
            selections: self.selections.saturating_add(other.selections),
            cost: self.cost.saturating_add(other.cost),
        }
    }
}

/// The bounds of one schema: [`check`](Bounds::check) measures documents against it.
pub struct Bounds {
    /// Object types a paged field returns (`ComputeSessionList`): the page's `limit` already
    /// counts their lists, so these count once.
    page_types: HashSet<String>,
}

impl Bounds {
    /// Finds the page types of `schema`: those a field with a `limit` argument returns.
    pub fn new<S>(schema: &SchemaType<'_, S>) -> Bounds {
        let mut page_types = HashSet::new();
        for t in schema.concrete_type_list() {
            let MetaType::Object(object) = t else {
                continue;
            };
            for field in &object.fields {
                let paged = field
                    .arguments
                    .as_ref()
                    .is_some_and(|args| args.iter().any(|a| a.name == "limit"));
                if paged && list_levels(&field.field_type) == 0 {
                    page_types.insert(field.field_type.innermost_name().to_owned());
                }
            }
        }
        Bounds { page_types }
    }

    /// Measures every operation and fragment of a parsed document; refuses it if one is over
    /// a bound, else returns the largest cost. Linear in the document: each fragment is
    /// measured once.
    pub fn check<'d, S: ScalarValue>(
        &'d self,
        doc: &'d [Definition<'d, S>],
        schema: &'d SchemaType<'d, S>,
        vars: &'d Variables<S>,
    ) -> Result<u64, LimitError> {
        let mut fragments: HashMap<&str, (&str, &[Selection<'_, S>])> = HashMap::new();
        for def in doc {
            if let Definition::Fragment(f) = def {
                let f = &f.item;
                // Duplicate names are juniper's to report; the first is measured.
                fragments
                    .entry(f.name.item)
                    .or_insert((f.type_condition.item, &f.selection_set));
            }
        }
        let mut m = Measurer {
            bounds: self,
            schema,
            vars,
            fragments,
            measured: HashMap::new(),
        };
        let mut total = Measure::default();
        let mut costliest = 0;
        let names: Vec<&str> = m.fragments.keys().copied().collect();
        for name in names {
            let measure = m.fragment(name)?;
            costliest = costliest.max(measure.cost);
            total = total.and(measure);
        }
        for def in doc {
            let Definition::Operation(op) = def else {
                continue;
            };
            let op = &op.item;
            let root = match op.operation_type {
                OperationType::Query => Some(schema.concrete_query_type()),
                OperationType::Mutation => schema.concrete_mutation_type(),
                OperationType::Subscription => schema.concrete_subscription_type(),
            };
            let measure = m.selection_set(&op.selection_set, root)?;
            limit(measure)?;
            costliest = costliest.max(measure.cost);
            total = total.and(measure);
        }
        if total.selections > MAX_SELECTIONS {
            return Err(LimitError::Selections(total.selections));
        }
        Ok(costliest)
    }
}

/// Refuses one operation's or fragment's measure over the depth or cost bound.
fn limit(m: Measure) -> Result<(), LimitError> {
    if m.depth > MAX_DEPTH {
        return Err(LimitError::Depth(m.depth));
    }
    if m.selections > MAX_SELECTIONS {
        return Err(LimitError::Selections(m.selections));
    }
    if m.cost > MAX_COST {
        return Err(LimitError::Cost(m.cost));
    }
    Ok(())
}

/// How many list wrappers a type has (`[T]!` has one).
fn list_levels(t: &Type<'_>) -> u32 {
    match t {
        Type::Named(_) | Type::NonNullNamed(_) => 0,
        Type::List(inner, _) | Type::NonNullList(inner, _) => 1 + list_levels(inner),
    }
}

struct Measurer<'d, S> {
    bounds: &'d Bounds,
    schema: &'d SchemaType<'d, S>,
    vars: &'d Variables<S>,
    /// Fragment name → (type condition, selections).
    fragments: HashMap<&'d str, (&'d str, &'d [Selection<'d, S>])>,
    measured: HashMap<&'d str, Measure>,
}

impl<'d, S: ScalarValue> Measurer<'d, S> {
    /// Measures fragment `name` and every fragment it spreads, each once, depth first with
    /// an explicit stack (a chain of thousands of fragments must not recurse).
    fn fragment(&mut self, name: &'d str) -> Result<Measure, LimitError> {
        if let Some(m) = self.measured.get(name) {
            return Ok(*m);
        }
        let mut on_path: HashSet<&'d str> = HashSet::from([name]);
        let mut stack: Vec<(&'d str, Vec<&'d str>, usize)> = vec![(name, self.spreads(name), 0)];
        while let Some((current, deps, next)) = stack.last_mut() {
            if let Some(&dep) = deps.get(*next) {
                *next += 1;
                if self.measured.contains_key(dep) || !self.fragments.contains_key(dep) {
                    continue; // done already, or unknown (juniper reports those)
                }
                if !on_path.insert(dep) {
                    return Err(LimitError::FragmentCycle(dep.to_owned()));
                }
                let spreads = self.spreads(dep);
                stack.push((dep, spreads, 0));
                continue;
            }
            // Everything `current` spreads is measured: measure it.
            let current = *current;
            let (condition, selections) = self.fragments[current];
            let on = self.schema.concrete_type_by_name(condition);
            let m = self.selection_set(selections, on)?;
            limit(m)?;
            self.measured.insert(current, m);
            on_path.remove(current);
            stack.pop();
        }
        Ok(self.measured.get(name).copied().unwrap_or_default())
    }

    /// The fragments a fragment spreads directly (in any of its nested selections).
    fn spreads(&self, name: &str) -> Vec<&'d str> {
        let mut out = Vec::new();
        let Some((_, selections)) = self.fragments.get(name) else {
            return out;
        };
        // Selections nest at most MAX_NESTING deep; a work list keeps this flat anyway.
        let mut todo: Vec<&'d [Selection<'d, S>]> = vec![selections];
        while let Some(set) = todo.pop() {
            for sel in set {
                match sel {
                    Selection::Field(f) => {
                        if let Some(s) = &f.item.selection_set {
                            todo.push(s);
                        }
                    }
                    Selection::FragmentSpread(s) => out.push(s.item.name.item),
                    Selection::InlineFragment(i) => todo.push(&i.item.selection_set),
                }
            }
        }
        out
    }

    /// Measures a selection set on `parent` (unknown types and fields count as plain values;
    /// juniper's validation refuses them later). Spread fragments must be measured already.
    /// Recursion follows the document's nesting, which [`scan`] bounded.
    fn selection_set(
        &self,
        selections: &'d [Selection<'d, S>],
        parent: Option<&'d MetaType<'d, S>>,
    ) -> Result<Measure, LimitError> {
        let mut total = Measure::default();
        for sel in selections {
            let inner = match sel {
                Selection::Field(f) => self.field(
                    f.item.name.item,
                    f.item.arguments.as_ref().map(|a| a.item.items.as_slice()),
                    f.item.selection_set.as_deref(),
                    parent,
                )?,
                Selection::FragmentSpread(s) => self
                    .measured
                    .get(s.item.name.item)
                    .copied()
                    .unwrap_or_default(),
                Selection::InlineFragment(i) => {
                    let on = match &i.item.type_condition {
                        Some(t) => self.schema.concrete_type_by_name(t.item),
                        None => parent,
                    };
                    self.selection_set(&i.item.selection_set, on)?
                }
            };
            let this = match sel {
                Selection::Field(_) => inner,
                // A spread or inline fragment is one more selection and one more level of
                // juniper's recursion, but no answer value.
                _ => Measure {
                    depth: inner.depth.saturating_add(1),
                    selections: inner.selections.saturating_add(1),
                    cost: inner.cost,
                },
            };
            total = total.and(this);
        }
        Ok(total)
    }

    /// Measures one field: its value (or values, for a list), the read behind it, and what
    /// is selected below it.
    fn field(
        &self,
        name: &str,
        arguments: Option<&'d [Argument<'d, S>]>,
        selections: Option<&'d [Selection<'d, S>]>,
        parent: Option<&'d MetaType<'d, S>>,
    ) -> Result<Measure, LimitError> {
        let meta = parent.and_then(|p| p.field_by_name(name));
        let inner_name = meta.map(|m| m.field_type.innermost_name());
        let inner = inner_name.and_then(|n| self.schema.concrete_type_by_name(n));
        let below = match selections {
            Some(s) => self.selection_set(s, inner)?,
            None => Measure::default(),
        };
        let parent_name = parent.and_then(MetaType::name).unwrap_or_default();
        let at_root = self.is_root(parent_name);
        let store_list = STORE_LISTS.contains(&(parent_name, name));
        let paged = meta
            .and_then(|m| m.arguments.as_ref())
            .is_some_and(|args| args.iter().any(|a| a.name == "limit"));
        let levels = meta.map_or(0, |m| list_levels(&m.field_type));
        // How many values this field stands for in the answer, per parent object.
        let length = if paged {
            self.page_limit(arguments)
        } else if levels == 0 || self.bounds.page_types.contains(parent_name) {
            1
        } else if at_root || store_list {
            LIST_CAP.saturating_pow(levels)
        } else {
            SMALL_LIST.saturating_pow(levels)
        };
        let read = if at_root || store_list {
            STORE_WEIGHT
        } else {
            0
        };
        let value = if inner_name == Some("JSONString") {
            DOCUMENT_WEIGHT
        } else {
            1
        };
        Ok(Measure {
            depth: below.depth.saturating_add(1),
            selections: below.selections.saturating_add(1),
            cost: read.saturating_add(length.saturating_mul(value.saturating_add(below.cost))),
        })
    }

    fn is_root(&self, type_name: &str) -> bool {
        let named = |t: Option<&MetaType<'_, S>>| t.and_then(MetaType::name) == Some(type_name);
        named(Some(self.schema.concrete_query_type()))
            || named(self.schema.concrete_mutation_type())
            || named(self.schema.concrete_subscription_type())
    }

    /// The page a paged field returns: its `limit` (a literal or a variable), clamped as the
    /// resolver clamps it; the largest page when it cannot be known here.
    fn page_limit(&self, arguments: Option<&[Argument<'_, S>]>) -> u64 {
        let value = arguments
            .and_then(|args| args.iter().find(|(n, _)| n.item == "limit"))
            .map(|(_, v)| &v.item);
        let limit = match value {
            Some(InputValue::Variable(var)) => {
                self.vars.get(var).and_then(InputValue::as_int_value)
            }
            Some(v) => v.as_int_value(),
            None => None,
        };
        limit.map_or(LIST_CAP, |l| u64::try_from(l).unwrap_or(0).min(LIST_CAP))
    }
}

/// A field argument as juniper's parser gives it.
type Argument<'a, S> = (Spanning<&'a str>, Spanning<InputValue<S>>);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::graphql::Schemas;
    use std::time::Instant;

    /// Scans, parses and measures `doc` against the admin or the user schema.
    fn measure(admin: bool, doc: &str, vars: serde_json::Value) -> Result<u64, LimitError> {
        let schemas = Schemas::new();
        let vars: Variables = match vars {
            serde_json::Value::Null => Variables::new(),
            v => serde_json::from_value(v).unwrap(),
        };
        scan(doc)?;
        if admin {
            let document =
                juniper::parser::parse_document_source(doc, &schemas.admin.schema).unwrap();
            schemas
                .admin_bounds
                .check(&document, &schemas.admin.schema, &vars)
        } else {
            let document =
                juniper::parser::parse_document_source(doc, &schemas.user.schema).unwrap();
            schemas
                .user_bounds
                .check(&document, &schemas.user.schema, &vars)
        }
    }

    const KEYPAIR_FIELDS: &str = "user_id access_key secret_key is_active is_admin created_at last_used resource_policy rate_limit concurrency_limit concurrency_used";
    const POLICY_FIELDS: &str = "name created_at default_for_unspecified total_resource_slots max_concurrent_sessions max_containers_per_session max_vfolder_count max_vfolder_size idle_timeout allowed_vfolder_hosts";

    /// Every query of client 19.6 (reference/client-compat.md §6.3) and of the web UI.
    fn client_queries() -> Vec<(bool, String, serde_json::Value)> {
        let null = serde_json::Value::Null;
        let mut out = vec![
            (false, "query { keypair { access_key secret_key is_active is_admin }}".to_owned(), null.clone()),
            (false, "query($limit:Int!, $offset:Int!, $ak:String, $status:String) { compute_session_list( limit:$limit, offset:$offset, access_key:$ak, status:$status) { items { sess_id access_key image tag created_at terminated_at status occupied_slots mem_cur_bytes mem_max_bytes cpu_using } total_count } }".to_owned(), serde_json::json!({"limit": 10, "offset": 0, "status": null, "ak": null})),
            (false, "query($limit:Int!, $offset:Int!, $ak:String, $status:String) { compute_session_list( limit:$limit, offset:$offset, access_key:$ak, status:$status) { items { sess_id access_key image tag created_at terminated_at status occupied_slots mem_cur_bytes mem_max_bytes cpu_using } total_count } }".to_owned(), serde_json::json!({"limit": 1000, "offset": 0})),
            (false, "query($sess_id:String) { compute_session(sess_id:$sess_id) { sess_id role image tag created_at terminated_at agent status status_info occupied_slots cpu_used mem_cur_bytes mem_max_bytes num_queries net_rx_bytes net_tx_bytes io_read_bytes io_write_bytes io_max_scratch_size io_cur_scratch_size cpu_using }}".to_owned(), null.clone()),
            (true, "query($limit: Int!, $offset: Int!, $status: String) { agent_list(limit: $limit, offset: $offset, status: $status) { items { id status region first_contact cpu_cur_pct mem_cur_bytes available_slots occupied_slots } total_count }}".to_owned(), serde_json::json!({"limit": 10, "offset": 0, "status": "ALIVE"})),
            (true, "query($agent_id: String!) { agent(agent_id: $agent_id) {id status region first_contact cpu_cur_pct mem_cur_bytes available_slots occupied_slots} }".to_owned(), null.clone()),
            (false, "query { images { name registry tag digest size_bytes aliases }}".to_owned(), null.clone()),
            (false, format!("query {{ keypair {{ {KEYPAIR_FIELDS} }}}}"), null.clone()),
            (true, format!("query($is_active: Boolean) {{ keypairs(is_active: $is_active) {{ {KEYPAIR_FIELDS} }}}}"), null.clone()),
            (true, "mutation($user_id: String!, $input: KeyPairInput!) { create_keypair(user_id: $user_id, props: $input) { ok msg keypair { access_key secret_key } }}".to_owned(), null.clone()),
            (false, format!("query($name: String) {{ keypair_resource_policy(name: $name) {{ {POLICY_FIELDS} }}}}"), null.clone()),
            (false, format!("query {{ keypair_resource_policies {{ {POLICY_FIELDS} }}}}"), null.clone()),
            (true, "query { domains {name description is_active created_at total_resource_slots} }".to_owned(), null.clone()),
            (false, "query($domain_name: String) { groups(domain_name: $domain_name) {id name description is_active created_at domain_name} }".to_owned(), null.clone()),
            (true, "query($is_active: Boolean) { users(is_active: $is_active) {uuid username email need_password_change is_active created_at domain_name role} }".to_owned(), null.clone()),
            (false, "query { vfolders { name created_at last_used max_files max_size } }".to_owned(), null.clone()),
            (true, "mutation($gid: String!, $input: ModifyGroupInput!) { modify_group(gid: $gid, props: $input) { ok msg } }".to_owned(), null.clone()),
        ];
        // The web UI (web/pages/*.js).
        for doc in [
            "query { users { uuid email username full_name role domain_name is_active created_at groups { name } } }",
            "query { keypairs { access_key user_id is_active is_admin resource_policy rate_limit last_used num_queries concurrency_used created_at } }",
            "query { keypair_resource_policies { name total_resource_slots default_for_unspecified max_concurrent_sessions max_containers_per_session idle_timeout max_vfolder_count max_vfolder_size allowed_vfolder_hosts created_at } }",
            "query { resource_presets { name resource_slots } }",
            "query { domains { name description is_active total_resource_slots created_at } }",
            "query { groups(all: true) { id name domain_name description is_active total_resource_slots created_at } }",
            "query { images { name tag registry aliases installed size_bytes resource_limits { key min max } } }",
            "query { agents { id status addr region version available_slots occupied_slots first_contact lost_at } }",
            "query { agents { id status addr region version available_slots occupied_slots cpu_cur_pct mem_cur_bytes first_contact } }",
            "query($status: String) { compute_sessions(status: $status) { sess_id status status_info image created_at occupied_slots agent } }",
            "query($id: String) { compute_session(sess_id: $id) { sess_id id status status_info image registry created_at terminated_at occupied_slots agent access_key group_name num_queries } }",
            "query { user { groups { id name } } }",
        ] {
            out.push((true, doc.to_owned(), null.clone()));
        }
        out.push((true, "query($limit: Int!, $offset: Int!, $status: String) { compute_session_list(limit: $limit, offset: $offset, status: $status) { total_count items { sess_id status status_info image created_at terminated_at occupied_slots agent access_key } } }".to_owned(), serde_json::json!({"limit": 20, "offset": 0, "status": "ALL"})));
        out
    }

    #[test]
    fn every_query_of_the_official_clients_and_the_web_ui_is_well_within_bounds() {
        for (admin, doc, vars) in client_queries() {
            let cost = measure(admin, &doc, vars).unwrap_or_else(|e| panic!("{doc}: {e}"));
            println!("{cost:>6} {doc}");
            assert!(cost <= MAX_COST * 2 / 3, "{doc} costs {cost}");
        }
    }

    #[test]
    fn the_standard_introspection_query_passes() {
        let type_ref = "fragment TypeRef on __Type { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } } }";
        let doc = format!(
            "query IntrospectionQuery {{ __schema {{ queryType {{ name }} mutationType {{ name }} subscriptionType {{ name }} types {{ ...FullType }} directives {{ name description locations args {{ ...InputValue }} }} }} }}
             fragment FullType on __Type {{ kind name description fields(includeDeprecated: true) {{ name description args {{ ...InputValue }} type {{ ...TypeRef }} isDeprecated deprecationReason }} inputFields {{ ...InputValue }} interfaces {{ ...TypeRef }} enumValues(includeDeprecated: true) {{ name description isDeprecated deprecationReason }} possibleTypes {{ ...TypeRef }} }}
             fragment InputValue on __InputValue {{ name description type {{ ...TypeRef }} defaultValue }}
             {type_ref}"
        );
        measure(true, &doc, serde_json::Value::Null).unwrap();
    }

    #[test]
    fn deep_nesting_is_refused_by_the_scan_before_any_parser_sees_it() {
        let depth = 100_000;
        let doc = format!(
            "{{ compute_session_list(limit:1, offset:0) {}{}",
            "{ total_count ".repeat(depth),
            "}".repeat(depth + 1)
        );
        assert_eq!(scan(&doc), Err(LimitError::Nesting));
        let values = format!("{{ f(a: {}1{}) }}", "[".repeat(depth), "]".repeat(depth));
        assert_eq!(scan(&values), Err(LimitError::Nesting));
        // Braces in strings and comments are not nesting.
        let quoted = format!("{{ f(a: \"{}\") }} # {}", "{".repeat(100), "{".repeat(100));
        assert_eq!(scan(&quoted), Ok(vec![Kind::Query]));
        assert_eq!(scan(&"a ".repeat(MAX_TOKENS + 1)), Err(LimitError::Tokens));
    }

    /// `F0` spreads `F1` twice, `F1` spreads `F2` twice, … : 2^n fields when expanded.
    fn fragment_bomb(n: usize) -> String {
        let mut doc = "query{...F0}".to_owned();
        for i in 0..n {
            doc.push_str(&format!(
                " fragment F{i} on QueryForUser{{...F{j} ...F{j}}}",
                j = i + 1
            ));
        }
        doc.push_str(&format!(
            " fragment F{n} on QueryForUser{{compute_session_list(limit:1,offset:0){{total_count}}}}"
        ));
        doc
    }

    #[test]
    fn a_fragment_bomb_is_counted_without_expanding_it() {
        let started = Instant::now();
        let err = measure(false, &fragment_bomb(30), serde_json::Value::Null).unwrap_err();
        assert!(matches!(err, LimitError::Selections(_)), "{err}");
        // Saturating arithmetic: 2^200 does not overflow.
        let err = measure(false, &fragment_bomb(200), serde_json::Value::Null).unwrap_err();
        assert!(matches!(err, LimitError::Selections(_)), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
        // Spreading the same small fragment many times is fine.
        measure(false, &fragment_bomb(3), serde_json::Value::Null).unwrap();
    }

    #[test]
    fn fragment_cycles_and_long_chains_are_refused_without_recursion() {
        let cycle = "query{...A} fragment A on QueryForUser{...B} fragment B on QueryForUser{...A}";
        assert!(matches!(
            measure(false, cycle, serde_json::Value::Null),
            Err(LimitError::FragmentCycle(_))
        ));
        let selfish = "query{...A} fragment A on QueryForUser{ user { email } ...A }";
        assert!(matches!(
            measure(false, selfish, serde_json::Value::Null),
            Err(LimitError::FragmentCycle(_))
        ));
        // 1 000 fragments in a chain, on a small stack: measured with a heap stack.
        let n = 1_000;
        let mut chain = "query{...F0}".to_owned();
        for i in 0..n {
            chain.push_str(&format!(" fragment F{i} on QueryForUser{{...F{}}}", i + 1));
        }
        chain.push_str(&format!(" fragment F{n} on QueryForUser{{user{{email}}}}"));
        let result = std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(move || measure(false, &chain, serde_json::Value::Null))
            .unwrap()
            .join()
            .unwrap();
        assert!(matches!(result, Err(LimitError::Depth(_))), "{result:?}");
    }

    #[test]
    fn aliases_count_as_the_fields_they_are() {
        let aliases = |n: usize| {
            let fields: String = (0..n)
                .map(|i| {
                    format!(" a{i}: compute_session_list(limit:1, offset:0) {{ total_count }}")
                })
                .collect();
            format!("query {{{fields} }}")
        };
        let err = measure(false, &aliases(6_000), serde_json::Value::Null).unwrap_err();
        assert_eq!(err, LimitError::Tokens);
        let fields: String = (0..1_200).map(|i| format!(" k{i}: access_key")).collect();
        let err = measure(
            false,
            &format!("{{ keypair {{{fields} }} }}"),
            serde_json::Value::Null,
        )
        .unwrap_err();
        assert_eq!(err, LimitError::Selections(1_201));
        let err = measure(false, &aliases(500), serde_json::Value::Null).unwrap_err();
        assert!(matches!(err, LimitError::Cost(_)), "{err}");
        measure(false, &aliases(10), serde_json::Value::Null).unwrap();
    }

    #[test]
    fn lists_weigh_their_length_and_pages_their_clamped_limit() {
        let users = |n: usize| {
            let fields: String = (0..n)
                .map(|i| format!(" u{i}: users {{ email }}"))
                .collect();
            format!("query {{{fields} }}")
        };
        let err = measure(true, &users(300), serde_json::Value::Null).unwrap_err();
        assert!(matches!(err, LimitError::Cost(_)), "{err}");
        let one = measure(true, &users(1), serde_json::Value::Null).unwrap();
        // The read, and per user its object and its e-mail.
        assert_eq!(one, STORE_WEIGHT + LIST_CAP * 2);
        let page = "query($l: Int!) { compute_session_list(limit: $l, offset: 0) { items { sess_id } total_count } }";
        let cost = |l: i64| measure(true, page, serde_json::json!({"l": l})).unwrap();
        // The read, and per page entry the list object, `items` with one field, `total_count`.
        assert_eq!(cost(10), STORE_WEIGHT + 10 * 4);
        assert_eq!(
            cost(100_000),
            cost(100),
            "a limit over the page size is clamped"
        );
        // A list of lists multiplies: every user's groups, for up to 100 users.
        let nested = measure(
            true,
            "{ users { groups { name } } }",
            serde_json::Value::Null,
        )
        .unwrap();
        assert_eq!(
            nested,
            STORE_WEIGHT + LIST_CAP * (1 + STORE_WEIGHT + LIST_CAP * 2)
        );
    }
}
