//! `haven-loadtest`: run a voice-room load scenario and print / write its figures.
//! The binary is a thin edge over the library (`anyhow` here, typed errors inside).

use std::io::IsTerminal;

use anyhow::{bail, Context};
use clap::Parser;
use haven_loadtest::report::{compare_table, summary_table, write_html, write_json};
use haven_loadtest::run::{run, RunOptions, RunOutcome};
use haven_loadtest::scenario::{Cli, Command, Scenario, Topology};
use haven_loadtest::target::TargetKind;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::ServeEngine) = cli.command {
        return haven_loadtest::engine_shell::serve_engine_stdio().context("serve-engine");
    }
    if let Some(Command::ServeRelay) = cli.command {
        return haven_loadtest::relay::serve_relay().context("serve-relay");
    }
    let args = cli.run;
    let scenario = Scenario::from_args(&args)?;
    let primary = if args.topology == Topology::Mesh {
        TargetKind::Mesh
    } else {
        args.target.clone()
    };
    let targets = match &args.compare {
        Some(v) if v.len() == 2 => v.clone(),
        Some(_) => bail!("--compare takes exactly two targets, e.g. engine,mesh"),
        None => vec![primary],
    };
    let progress = !args.no_progress && std::io::stderr().is_terminal();
    let mut outcomes: Vec<RunOutcome> = Vec::new();
    for t in &targets {
        eprintln!(
            "haven-loadtest: {} rooms, {} participants, {:?} window, target {t}, impairment {}, seed {}",
            scenario.rooms(),
            scenario.total_participants(),
            scenario.duration,
            scenario.impair,
            scenario.seed
        );
        let o = run(&RunOptions {
            scenario: scenario.clone(),
            target: t.clone(),
            exe: None,
            progress,
            own_stack: args.own_stack,
            relay_baseline: args.relay_baseline,
        })
        .with_context(|| format!("run against {t}"))?;
        outcomes.push(o);
    }
    let refs: Vec<&RunOutcome> = outcomes.iter().collect();
    match refs.as_slice() {
        [a, b] => println!("{}", compare_table(&a.result, &b.result)),
        [one] => println!("{}", summary_table(&one.result)),
        _ => {}
    }
    if let Some(path) = &args.json {
        write_json(path, &refs).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(dir) = &args.report {
        write_html(dir, &refs).with_context(|| format!("writing {}", dir.display()))?;
        eprintln!("wrote {}/index.html", dir.display());
    }
    Ok(())
}
