fn main() {
    let p = std::env::args().nth(1).unwrap();
    let t = std::time::Instant::now();
    let out = chimera_compiler::eval::evaluate(std::path::Path::new(&p), &Default::default());
    eprintln!("eval {:?}", t.elapsed());
    match out.result {
        Ok(ev) => {
            println!("stack {} files {:?}", ev.stack, ev.files_read);
            for r in ev.resources.iter().take(3) {
                println!("{}", serde_json::to_string(&r.fields).unwrap());
                println!("{:?}", r.field_spans.iter().map(|(k, s)| (k.clone(), out.sources.locate(*s).map(|l| format!("{}:{}:{}", l.file, l.line, l.column)))).collect::<Vec<_>>());
            }
            println!("n={}", ev.resources.len());
        }
        Err(d) => println!("{}", out.sources.render(&d, false)),
    }
}
