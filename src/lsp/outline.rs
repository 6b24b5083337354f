//! The outline (documentSymbol): models and blocks with the names they bind, from the AST.

use lsp_types as lsp;

use super::Server;
use crate::diagnostics::Span;
use crate::syntax::ast;

impl Server {
    pub(super) fn symbols(&self, uri: &lsp::Url) -> Option<lsp::DocumentSymbolResponse> {
        let doc = self.documents.get(uri)?;
        let file = &doc.ast;
        let text = &doc.text;
        #[allow(deprecated)] // `deprecated` is a required field of the struct
        let symbol =
            |name: &str,
             detail: Option<String>,
             kind,
             span: Span,
             sel: Span,
             children: Option<Vec<lsp::DocumentSymbol>>| lsp::DocumentSymbol {
                name: name.to_string(),
                detail,
                kind,
                tags: None,
                deprecated: None,
                range: text.range(span),
                selection_range: text.range(sel),
                children,
            };
        let bindings = |statements: &[ast::Statement]| bindings(statements, &symbol);
        let mut out = Vec::new();
        for item in &file.items {
            match item {
                ast::Item::Model(m) => out.push(symbol(
                    &m.name.name,
                    Some("model".into()),
                    lsp::SymbolKind::CLASS,
                    m.span,
                    m.name.span,
                    Some(bindings(&m.statements)),
                )),
                ast::Item::Block(b) => out.push(symbol(
                    &b.name.name,
                    Some("block".into()),
                    lsp::SymbolKind::FUNCTION,
                    b.span,
                    b.name.span,
                    Some(bindings(&b.statements)),
                )),
                ast::Item::Use(u) => out.push(symbol(
                    &u.path,
                    Some("use".into()),
                    lsp::SymbolKind::FILE,
                    u.span,
                    u.path_span,
                    None,
                )),
                ast::Item::QuantDefault(q) => out.push(symbol(
                    "quant default",
                    None,
                    lsp::SymbolKind::NAMESPACE,
                    q.span,
                    q.span,
                    None,
                )),
            }
        }
        Some(lsp::DocumentSymbolResponse::Nested(out))
    }
}

/// The names `statements` bind, as outline symbols; an `if` is a symbol holding the
/// names of its branches (`else` one level down), since either may be the one inlined.
fn bindings(
    statements: &[ast::Statement],
    symbol: &impl Fn(
        &str,
        Option<String>,
        lsp::SymbolKind,
        Span,
        Span,
        Option<Vec<lsp::DocumentSymbol>>,
    ) -> lsp::DocumentSymbol,
) -> Vec<lsp::DocumentSymbol> {
    statements
        .iter()
        .flat_map(|s| match s {
            ast::Statement::Input(i) => vec![symbol(
                &i.name.name,
                Some("input".into()),
                lsp::SymbolKind::VARIABLE,
                i.span,
                i.name.span,
                None,
            )],
            ast::Statement::Let(l) => l
                .names
                .iter()
                .map(|n| {
                    symbol(
                        &n.name,
                        Some(l.call.callee.name.clone()),
                        lsp::SymbolKind::VARIABLE,
                        l.span,
                        n.span,
                        None,
                    )
                })
                .collect(),
            ast::Statement::IntLet(l) => vec![symbol(
                &l.name.name,
                Some("int".into()),
                lsp::SymbolKind::VARIABLE,
                l.span,
                l.name.span,
                None,
            )],
            ast::Statement::If(i) => {
                let mut children = bindings(&i.then, symbol);
                if let Some(otherwise) = &i.otherwise {
                    children.push(symbol(
                        "else",
                        None,
                        lsp::SymbolKind::NAMESPACE,
                        i.span,
                        i.span,
                        Some(bindings(otherwise, symbol)),
                    ));
                }
                vec![symbol(
                    "if",
                    Some(i.condition.to_string()),
                    lsp::SymbolKind::NAMESPACE,
                    i.span,
                    i.span,
                    Some(children),
                )]
            }
            ast::Statement::Output(_) => Vec::new(),
        })
        .collect()
}
