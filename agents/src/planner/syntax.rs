//! A stack file's syntax: Nickel's parser (nickel-lang-core's new AST) turned into a small owned
//! tree with byte spans and parent links, and the few questions the planner asks of it: which
//! node is at a span, what a variable is bound to, where a record's fields and an array's
//! elements are.
//!
//! **Architecture Invariant:** the tree is read-only and lossless about positions: every span
//! is a byte range of the file as given, so an edit computed on it replaces exactly that text
//! and nothing else (comments and layout around it survive).

use nickel_lang_core::ast::pattern::PatternData;
use nickel_lang_core::ast::primop::PrimOp;
use nickel_lang_core::ast::record::FieldPathElem;
use nickel_lang_core::ast::{Ast, AstAlloc, Import, MergePriority, Node, StringChunk};
use nickel_lang_core::files::Files;
use nickel_lang_core::parser::ErrorTolerantParser;
use nickel_lang_core::parser::grammar::TermParser;
use nickel_lang_core::parser::lexer::Lexer;

/// A byte range `[start, end)` of a file.
pub type Span = (usize, usize);

/// A node index into [`Tree::nodes`].
pub type Id = usize;

/// One field definition of a record literal.
#[derive(Debug, Clone)]
pub struct Field {
    /// The field's name (a dotted path is joined with `.`); `None` for an interpolated name.
    pub name: Option<String>,
    /// The whole definition: name, annotations and value.
    pub span: Span,
    /// The value, when the field has one.
    pub value: Option<Id>,
    /// `| default` (the value can be overridden by a merge).
    pub default: bool,
}

/// A piece of a string with interpolations.
#[derive(Debug, Clone)]
pub enum Chunk {
    Text(String),
    Expr(Id),
}

#[derive(Debug, Clone)]
pub enum Kind {
    Null,
    Bool(bool),
    /// The number as written.
    Number(String),
    /// A string without interpolation.
    Str(String),
    /// A string with interpolations.
    Chunks(Vec<Chunk>),
    Var(String),
    /// `'tag` (an argument, if any, is a child).
    Enum(String),
    /// `record.field`.
    Access {
        record: Id,
        field: String,
    },
    Record(Vec<Field>),
    Array(Vec<Id>),
    /// `a & b` (binary, left-associative as parsed).
    Merge(Id, Id),
    /// `a @ b`.
    Concat(Id, Id),
    /// Any other primitive operation.
    Op(Vec<Id>),
    App {
        head: Id,
        args: Vec<Id>,
    },
    Fun {
        /// One name per simple parameter; `None` for a destructuring pattern.
        params: Vec<Option<String>>,
        body: Id,
    },
    Let {
        /// Each binding's name (`None`: a destructuring pattern) and value.
        bindings: Vec<(Option<String>, Id)>,
        body: Id,
        rec: bool,
    },
    Annotated(Id),
    Import(String),
    /// Everything else (if, match, types, parse errors): its sub-expressions.
    Other(Vec<Id>),
}

#[derive(Debug, Clone)]
pub struct SyntaxNode {
    pub span: Span,
    pub parent: Option<Id>,
    pub kind: Kind,
}

/// A parsed file.
#[derive(Debug, Clone)]
pub struct Tree {
    pub text: String,
    pub nodes: Vec<SyntaxNode>,
    pub root: Id,
}

/// What a variable refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// Binding `index` of the `let` node.
    Let { node: Id, index: usize },
    /// Parameter `index` of the function node.
    Param { node: Id, index: usize },
    /// Field `index` of a record literal (records are recursive: fields see each other).
    Field { node: Id, index: usize },
}

impl Tree {
    /// Parses `text` (one Nickel file). The error is Nickel's parse error, rendered in one line.
    pub fn parse(name: &str, text: &str) -> Result<Tree, String> {
        let mut files = Files::empty();
        let file_id = files.add(name, text);
        let alloc = AstAlloc::new();
        let ast = TermParser::new()
            .parse_strict(&alloc, file_id, Lexer::new(text))
            .map_err(|e| format!("{name} does not parse: {e:?}"))?;
        let mut tree = Tree {
            text: text.to_string(),
            nodes: Vec::new(),
            root: 0,
        };
        tree.root = tree.add(&ast, None, (0, text.len()));
        Ok(tree)
    }

    fn add(&mut self, ast: &Ast<'_>, parent: Option<Id>, fallback: Span) -> Id {
        let span = ast
            .pos
            .into_opt()
            .map(|s| (s.start.to_usize(), s.end.to_usize()))
            .unwrap_or(fallback);
        let id = self.nodes.len();
        self.nodes.push(SyntaxNode {
            span,
            parent,
            kind: Kind::Null,
        });
        let p = Some(id);
        let kind = match &ast.node {
            Node::Null => Kind::Null,
            Node::Bool(b) => Kind::Bool(*b),
            Node::Number(_) => Kind::Number(self.text[span.0..span.1].to_string()),
            Node::String(s) => Kind::Str(s.to_string()),
            Node::StringChunks(chunks) => {
                let mut out = Vec::new();
                for c in chunks.iter() {
                    match c {
                        StringChunk::Literal(s) => out.push(Chunk::Text(s.clone())),
                        StringChunk::Expr(e, _) => out.push(Chunk::Expr(self.add(e, p, span))),
                    }
                }
                match StringChunk::try_chunks_as_static_str(chunks.iter()) {
                    Some(s) => Kind::Str(s),
                    None => Kind::Chunks(out),
                }
            }
            Node::Fun { args, body } => {
                let params = args
                    .iter()
                    .map(|a| match &a.data {
                        PatternData::Any(id) => Some(id.label().to_string()),
                        _ => None,
                    })
                    .collect();
                Kind::Fun {
                    params,
                    body: self.add(body, p, span),
                }
            }
            Node::Let {
                bindings,
                body,
                rec,
            } => {
                let mut out = Vec::new();
                for b in bindings.iter() {
                    let name = match &b.pattern.data {
                        PatternData::Any(id) => Some(id.label().to_string()),
                        _ => None,
                    };
                    out.push((name, self.add(&b.value, p, span)));
                }
                Kind::Let {
                    bindings: out,
                    body: self.add(body, p, span),
                    rec: *rec,
                }
            }
            Node::App { head, args } => {
                let head = self.add(head, p, span);
                let args = args.iter().map(|a| self.add(a, p, span)).collect();
                Kind::App { head, args }
            }
            Node::Var(id) => Kind::Var(id.label().to_string()),
            Node::EnumVariant { tag, arg } => {
                if let Some(a) = arg {
                    self.add(a, p, span);
                }
                Kind::Enum(tag.label().to_string())
            }
            Node::Record(record) => {
                let mut fields = Vec::new();
                for def in record.field_defs.iter() {
                    let names: Option<Vec<String>> = def
                        .path
                        .iter()
                        .map(|e| match e {
                            FieldPathElem::Ident(id) => Some(id.label().to_string()),
                            FieldPathElem::Expr(e) => e.node.try_str_chunk_as_static_str(),
                        })
                        .collect();
                    let fspan = def
                        .pos
                        .into_opt()
                        .map(|s| (s.start.to_usize(), s.end.to_usize()))
                        .unwrap_or(span);
                    let value = def.value.as_ref().map(|v| self.add(v, p, fspan));
                    fields.push(Field {
                        name: names.map(|n| n.join(".")),
                        span: fspan,
                        value,
                        default: matches!(def.metadata.priority, MergePriority::Bottom),
                    });
                }
                Kind::Record(fields)
            }
            Node::Array(items) => Kind::Array(items.iter().map(|i| self.add(i, p, span)).collect()),
            Node::PrimOpApp { op, args } => {
                let ids: Vec<Id> = args.iter().map(|a| self.add(a, p, span)).collect();
                match (op, ids.as_slice()) {
                    (PrimOp::Merge(_), [l, r]) => Kind::Merge(*l, *r),
                    (PrimOp::ArrayConcat, [l, r]) => Kind::Concat(*l, *r),
                    (PrimOp::RecordStatAccess(field), [record]) => Kind::Access {
                        record: *record,
                        field: field.label().to_string(),
                    },
                    _ => Kind::Op(ids),
                }
            }
            Node::Annotated { inner, .. } => Kind::Annotated(self.add(inner, p, span)),
            Node::Import(Import::Path { path, .. }) => {
                Kind::Import(path.to_string_lossy().into_owned())
            }
            Node::Import(Import::Package { id }) => Kind::Import(id.label().to_string()),
            Node::IfThenElse {
                cond,
                then_branch,
                else_branch,
            } => Kind::Other(vec![
                self.add(cond, p, span),
                self.add(then_branch, p, span),
                self.add(else_branch, p, span),
            ]),
            Node::Match(m) => {
                let mut out = Vec::new();
                for b in m.branches.iter() {
                    if let Some(g) = &b.guard {
                        out.push(self.add(g, p, span));
                    }
                    out.push(self.add(&b.body, p, span));
                }
                Kind::Other(out)
            }
            Node::Type(_) | Node::ParseError(_) => Kind::Other(Vec::new()),
        };
        self.nodes[id].kind = kind;
        id
    }

    pub fn node(&self, id: Id) -> &SyntaxNode {
        &self.nodes[id]
    }

    pub fn kind(&self, id: Id) -> &Kind {
        &self.nodes[id].kind
    }

    pub fn span(&self, id: Id) -> Span {
        self.nodes[id].span
    }

    pub fn source(&self, id: Id) -> &str {
        let (s, e) = self.span(id);
        &self.text[s..e]
    }

    /// `id` and its ancestors, innermost first.
    pub fn ancestors(&self, id: Id) -> impl Iterator<Item = Id> + '_ {
        std::iter::successors(Some(id), |&i| self.nodes[i].parent)
    }

    /// The innermost node spanning exactly `span`, after looking through annotations.
    pub fn at(&self, span: Span) -> Option<Id> {
        // Nodes are numbered parents first: the last match is the innermost.
        self.nodes.iter().rposition(|n| n.span == span)
    }

    /// The innermost node whose span contains `span`.
    pub fn containing(&self, span: Span) -> Option<Id> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.span.0 <= span.0 && span.1 <= n.span.1)
            .min_by_key(|(_, n)| n.span.1 - n.span.0)
            .map(|(i, _)| i)
    }

    /// Looks through annotations (`x | Number`).
    pub fn peel(&self, mut id: Id) -> Id {
        while let Kind::Annotated(inner) = self.kind(id) {
            id = *inner;
        }
        id
    }

    /// The body of a chain of `let`s.
    pub fn let_body(&self, mut id: Id) -> Id {
        loop {
            id = self.peel(id);
            match self.kind(id) {
                Kind::Let { body, .. } => id = *body,
                _ => return id,
            }
        }
    }

    /// The operands of a merge chain `a & b & c`, in order (a single operand when `id` is not a
    /// merge).
    pub fn merge_operands(&self, id: Id) -> Vec<Id> {
        match self.kind(id) {
            Kind::Merge(l, r) => {
                let mut out = self.merge_operands(*l);
                out.extend(self.merge_operands(*r));
                out
            }
            _ => vec![id],
        }
    }

    /// The field `name` of a record literal node.
    pub fn field(&self, record: Id, name: &str) -> Option<(usize, &Field)> {
        match self.kind(record) {
            Kind::Record(fields) => fields
                .iter()
                .enumerate()
                .find(|(_, f)| f.name.as_deref() == Some(name)),
            _ => None,
        }
    }

    /// `a.b.c` as `["a", "b", "c"]` when the node is a variable followed by field accesses.
    pub fn path(&self, id: Id) -> Option<Vec<String>> {
        match self.kind(id) {
            Kind::Var(v) => Some(vec![v.clone()]),
            Kind::Access { record, field } => {
                let mut p = self.path(*record)?;
                p.push(field.clone());
                Some(p)
            }
            _ => None,
        }
    }

    /// What the variable `name`, used at node `at`, is bound to.
    pub fn resolve(&self, at: Id, name: &str) -> Option<Binding> {
        let mut child = at;
        for anc in self.ancestors(at).skip(1) {
            match self.kind(anc) {
                Kind::Let {
                    bindings,
                    body,
                    rec,
                } => {
                    // A plain `let` binds in its body; `let rec` in its values too.
                    if *body == child || *rec {
                        if let Some(index) = bindings
                            .iter()
                            .rposition(|(n, _)| n.as_deref() == Some(name))
                        {
                            return Some(Binding::Let { node: anc, index });
                        }
                    }
                }
                Kind::Fun { params, .. } => {
                    if let Some(index) = params.iter().position(|n| n.as_deref() == Some(name)) {
                        return Some(Binding::Param { node: anc, index });
                    }
                }
                Kind::Record(fields) => {
                    if let Some(index) = fields.iter().position(|f| f.name.as_deref() == Some(name))
                    {
                        return Some(Binding::Field { node: anc, index });
                    }
                }
                _ => {}
            }
            child = anc;
        }
        None
    }

    /// The value node a binding gives (a parameter has none).
    pub fn bound_value(&self, b: Binding) -> Option<Id> {
        match b {
            Binding::Let { node, index } => match self.kind(node) {
                Kind::Let { bindings, .. } => bindings.get(index).map(|(_, v)| *v),
                _ => None,
            },
            Binding::Field { node, index } => match self.kind(node) {
                Kind::Record(fields) => fields.get(index).and_then(|f| f.value),
                _ => None,
            },
            Binding::Param { .. } => None,
        }
    }

    /// The name `c` the stack binds `import "chimera.ncl"` to, if any.
    pub fn stdlib_name(&self) -> Option<String> {
        self.nodes.iter().find_map(|n| match &n.kind {
            Kind::Let { bindings, .. } => bindings.iter().find_map(|(name, v)| {
                let v = self.peel(*v);
                match self.kind(v) {
                    Kind::Import(p) if p.ends_with("chimera.ncl") => name.clone(),
                    _ => None,
                }
            }),
            _ => None,
        })
    }

    /// Whether `name` at `at` means the same binding as at `other`.
    pub fn same_binding(&self, name: &str, at: Id, other: Id) -> bool {
        self.resolve(at, name) == self.resolve(other, name)
    }

    /// The start of the line holding byte `pos`.
    pub fn line_start(&self, pos: usize) -> usize {
        self.text[..pos].rfind('\n').map(|i| i + 1).unwrap_or(0)
    }

    /// The end of the line holding byte `pos` (the index of its `\n`, or the file's end).
    pub fn line_end(&self, pos: usize) -> usize {
        self.text[pos..]
            .find('\n')
            .map(|i| pos + i)
            .unwrap_or(self.text.len())
    }

    /// The whitespace a line starts with.
    pub fn indent_at(&self, pos: usize) -> &str {
        let start = self.line_start(pos);
        let line = &self.text[start..];
        let n = line.len() - line.trim_start_matches([' ', '\t']).len();
        &line[..n]
    }
}
