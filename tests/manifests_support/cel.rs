//! A tiny parser and evaluator for the CEL subset hotnic's matchConditions use, with CEL's
//! semantics where they matter for admission: selecting a missing map key is an error (the API
//! server then applies failurePolicy, i.e. rejects the request), `has(x.f)` tests presence,
//! `&&`/`||` absorb an error when the other side decides the result. Unknown identifiers and
//! functions are parse errors.

use serde_json::Value;

/// Identifiers a webhook matchCondition may use (object, oldObject, request; plus literals).
pub const KNOWN_IDENTS: &[&str] = &["object", "oldObject", "request"];

/// An expression.
#[derive(Debug, Clone)]
pub enum Expr {
    Ident(String),
    Lit(Value),
    Select(Box<Expr>, String),
    Index(Box<Expr>, Box<Expr>),
    Has(Box<Expr>, String),
    Size(Box<Expr>),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Eq(Box<Expr>, Box<Expr>, bool),
    In(Box<Expr>, Box<Expr>),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Int(i64),
    Sym(&'static str),
}

fn lex(s: &str) -> Result<Vec<Tok>, String> {
    let b: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        let c = b[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_alphabetic() || c == '_' {
            let st = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == '_') {
                i += 1;
            }
            out.push(Tok::Ident(b[st..i].iter().collect()));
        } else if c.is_ascii_digit() {
            let st = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            let t: String = b[st..i].iter().collect();
            out.push(Tok::Int(t.parse().map_err(|e| format!("{t}: {e}"))?));
        } else if c == '\'' || c == '"' {
            let q = c;
            i += 1;
            let st = i;
            while i < b.len() && b[i] != q {
                if b[i] == '\\' {
                    return Err("escapes are not supported".into());
                }
                i += 1;
            }
            if i == b.len() {
                return Err("unterminated string".into());
            }
            out.push(Tok::Str(b[st..i].iter().collect()));
            i += 1;
        } else {
            let two: String = b[i..(i + 2).min(b.len())].iter().collect();
            let sym = ["&&", "||", "==", "!="].into_iter().find(|s| *s == two);
            if let Some(s) = sym {
                out.push(Tok::Sym(s));
                i += 2;
            } else {
                let s = match c {
                    '(' => "(",
                    ')' => ")",
                    '[' => "[",
                    ']' => "]",
                    '.' => ".",
                    ',' => ",",
                    '!' => "!",
                    _ => return Err(format!("unexpected character {c:?}")),
                };
                out.push(Tok::Sym(s));
                i += 1;
            }
        }
    }
    Ok(out)
}

struct P {
    t: Vec<Tok>,
    i: usize,
}

impl P {
    fn peek(&self) -> Option<&Tok> {
        self.t.get(self.i)
    }
    fn eat(&mut self, s: &'static str) -> bool {
        if self.peek() == Some(&Tok::Sym(s)) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn want(&mut self, s: &'static str) -> Result<(), String> {
        if self.eat(s) {
            Ok(())
        } else {
            Err(format!(
                "expected {s:?} at token {} ({:?})",
                self.i,
                self.peek()
            ))
        }
    }
    fn or(&mut self) -> Result<Expr, String> {
        let mut l = self.and()?;
        while self.eat("||") {
            l = Expr::Or(Box::new(l), Box::new(self.and()?));
        }
        Ok(l)
    }
    fn and(&mut self) -> Result<Expr, String> {
        let mut l = self.rel()?;
        while self.eat("&&") {
            l = Expr::And(Box::new(l), Box::new(self.rel()?));
        }
        Ok(l)
    }
    fn rel(&mut self) -> Result<Expr, String> {
        let l = self.unary()?;
        if self.eat("==") {
            return Ok(Expr::Eq(Box::new(l), Box::new(self.unary()?), true));
        }
        if self.eat("!=") {
            return Ok(Expr::Eq(Box::new(l), Box::new(self.unary()?), false));
        }
        if self.peek() == Some(&Tok::Ident("in".into())) {
            self.i += 1;
            return Ok(Expr::In(Box::new(l), Box::new(self.unary()?)));
        }
        Ok(l)
    }
    fn unary(&mut self) -> Result<Expr, String> {
        if self.eat("!") {
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        let mut e = self.primary()?;
        loop {
            if self.eat(".") {
                match self.t.get(self.i).cloned() {
                    Some(Tok::Ident(f)) => {
                        self.i += 1;
                        e = Expr::Select(Box::new(e), f);
                    }
                    other => return Err(format!("expected a field name after '.', got {other:?}")),
                }
            } else if self.eat("[") {
                let k = self.or()?;
                self.want("]")?;
                e = Expr::Index(Box::new(e), Box::new(k));
            } else {
                return Ok(e);
            }
        }
    }
    fn primary(&mut self) -> Result<Expr, String> {
        let t = self
            .t
            .get(self.i)
            .cloned()
            .ok_or("unexpected end of expression")?;
        self.i += 1;
        match t {
            Tok::Sym("(") => {
                let e = self.or()?;
                self.want(")")?;
                Ok(e)
            }
            Tok::Str(s) => Ok(Expr::Lit(Value::String(s))),
            Tok::Int(n) => Ok(Expr::Lit(Value::from(n))),
            Tok::Ident(id) => match id.as_str() {
                "true" => Ok(Expr::Lit(Value::Bool(true))),
                "false" => Ok(Expr::Lit(Value::Bool(false))),
                "null" => Ok(Expr::Lit(Value::Null)),
                "has" => {
                    self.want("(")?;
                    let arg = self.or()?;
                    self.want(")")?;
                    match arg {
                        Expr::Select(on, f) => Ok(Expr::Has(on, f)),
                        other => Err(format!("has() needs a field selection, got {other:?}")),
                    }
                }
                "size" => {
                    self.want("(")?;
                    let arg = self.or()?;
                    self.want(")")?;
                    Ok(Expr::Size(Box::new(arg)))
                }
                _ if KNOWN_IDENTS.contains(&id.as_str()) => Ok(Expr::Ident(id)),
                _ => Err(format!("unknown identifier or function {id:?}")),
            },
            other => Err(format!("unexpected token {other:?}")),
        }
    }
}

/// Parses an expression; also checks parentheses and brackets balance (the parser needs it).
pub fn parse(src: &str) -> Result<Expr, String> {
    let mut depth = 0i32;
    for c in src.chars() {
        depth += match c {
            '(' | '[' => 1,
            ')' | ']' => -1,
            _ => 0,
        };
        if depth < 0 {
            return Err("unbalanced: a closing bracket without an opening one".into());
        }
    }
    if depth != 0 {
        return Err(format!("unbalanced: {depth} bracket(s) left open"));
    }
    let mut p = P { t: lex(src)?, i: 0 };
    let e = p.or()?;
    if p.i != p.t.len() {
        return Err(format!("trailing tokens from {:?}", p.peek()));
    }
    Ok(e)
}

/// The root identifiers an expression references.
pub fn idents(e: &Expr, out: &mut Vec<String>) {
    match e {
        Expr::Ident(i) => out.push(i.clone()),
        Expr::Lit(_) => {}
        Expr::Select(a, _) | Expr::Has(a, _) | Expr::Size(a) | Expr::Not(a) => idents(a, out),
        Expr::Index(a, b)
        | Expr::And(a, b)
        | Expr::Or(a, b)
        | Expr::Eq(a, b, _)
        | Expr::In(a, b) => {
            idents(a, out);
            idents(b, out);
        }
    }
}

/// Evaluates against the request variables; `Err` is a CEL evaluation error.
pub fn eval(e: &Expr, vars: &[(&str, &Value)]) -> Result<Value, String> {
    let b = |v: Value| -> Result<bool, String> {
        v.as_bool()
            .ok_or_else(|| format!("no such overload: {v} is not a bool"))
    };
    match e {
        Expr::Ident(i) => vars
            .iter()
            .find(|(n, _)| n == i)
            .map(|(_, v)| (*v).clone())
            .ok_or(format!("undeclared {i}")),
        Expr::Lit(v) => Ok(v.clone()),
        Expr::Select(on, f) => match eval(on, vars)? {
            Value::Object(m) => m.get(f).cloned().ok_or(format!("no such key: {f}")),
            other => Err(format!("cannot select {f} on {}", kind(&other))),
        },
        Expr::Has(on, f) => match eval(on, vars)? {
            Value::Object(m) => Ok(Value::Bool(m.contains_key(f))),
            other => Err(format!("has() on {}", kind(&other))),
        },
        Expr::Index(on, k) => match (eval(on, vars)?, eval(k, vars)?) {
            (Value::Object(m), Value::String(k)) => {
                m.get(&k).cloned().ok_or(format!("no such key: {k}"))
            }
            (Value::Array(a), Value::Number(n)) => n
                .as_u64()
                .and_then(|i| a.get(i as usize).cloned())
                .ok_or("index out of range".into()),
            (a, k) => Err(format!("cannot index {} with {}", kind(&a), kind(&k))),
        },
        Expr::Size(a) => match eval(a, vars)? {
            Value::String(s) => Ok(Value::from(s.chars().count())),
            Value::Array(a) => Ok(Value::from(a.len())),
            Value::Object(m) => Ok(Value::from(m.len())),
            other => Err(format!("size() of {}", kind(&other))),
        },
        Expr::Not(a) => Ok(Value::Bool(!b(eval(a, vars)?)?)),
        Expr::And(l, r) => {
            let (l, r) = (eval(l, vars).and_then(b), eval(r, vars).and_then(b));
            match (l, r) {
                (Ok(false), _) | (_, Ok(false)) => Ok(Value::Bool(false)),
                (Ok(true), Ok(true)) => Ok(Value::Bool(true)),
                (Err(e), _) | (_, Err(e)) => Err(e),
            }
        }
        Expr::Or(l, r) => {
            let (l, r) = (eval(l, vars).and_then(b), eval(r, vars).and_then(b));
            match (l, r) {
                (Ok(true), _) | (_, Ok(true)) => Ok(Value::Bool(true)),
                (Ok(false), Ok(false)) => Ok(Value::Bool(false)),
                (Err(e), _) | (_, Err(e)) => Err(e),
            }
        }
        Expr::Eq(l, r, want) => Ok(Value::Bool((eval(l, vars)? == eval(r, vars)?) == *want)),
        Expr::In(k, c) => match (eval(k, vars)?, eval(c, vars)?) {
            (Value::String(k), Value::Object(m)) => Ok(Value::Bool(m.contains_key(&k))),
            (k, Value::Array(a)) => Ok(Value::Bool(a.contains(&k))),
            (k, c) => Err(format!("no such overload: {} in {}", kind(&k), kind(&c))),
        },
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "map",
    }
}
