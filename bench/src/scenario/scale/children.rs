//! The client processes: the coordinator's side (start them with a share of the clients each,
//! wait for their lines, collect their reports) and the child's entry point.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use anyhow::{Context as _, bail};

use super::Args;
use super::clients::{Clients, Follower, Poller, Report, Share, serve as serve_clients};

/// A client process and its two pipes.
struct Process {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

/// The client processes, and the file of watch tokens they read at start.
pub struct Children(Vec<Process>, PathBuf);

/// The tokens are secrets of the seeded logins: gone with the run.
impl Drop for Children {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.1);
    }
}

impl Children {
    /// Starts enough processes that none holds more than `--clients-per-process` clients,
    /// each with an equal share of the streams and long polls and of `--opening`.
    pub fn start(args: &Args, tokens: &[String], logins: usize) -> anyhow::Result<Children> {
        let clients = args.streams + args.long_polls;
        let count = clients.div_ceil(args.clients_per_process.max(1)).max(1);
        let file =
            std::env::temp_dir().join(format!("facepair-scale-{}.tokens", std::process::id()));
        std::fs::write(&file, tokens.join("\n"))?;
        let opening = args.opening.div_ceil(count);
        let mut processes = Vec::with_capacity(count);
        for n in 0..count {
            let streams = share(args.streams, count, n);
            let polls = share(args.long_polls, count, n);
            let spec = format!(
                "{}:{}:{}:{}:{}:{logins}:{opening}",
                file.display(),
                streams.start,
                streams.end,
                polls.start,
                polls.end
            );
            processes.push(spawn(args, &spec)?);
        }
        Ok(Children(processes, file))
    }

    /// Waits for every process to say `word`, and sums the numbers they give after it.
    pub async fn expect_all(&mut self, word: &str) -> anyhow::Result<usize> {
        let mut total = 0;
        for p in &mut self.0 {
            let line = blocking(|| read_line(&mut p.output))?;
            let Some(rest) = line.strip_prefix(word) else {
                bail!("a client process said {line:?}, not {word}");
            };
            total += rest.trim().parse::<usize>().unwrap_or(0);
        }
        Ok(total)
    }

    pub async fn tell(&mut self, word: &str) -> anyhow::Result<()> {
        for p in &mut self.0 {
            writeln!(p.input, "{word}")?;
        }
        Ok(())
    }

    /// Every client's report, once each process has been told to stop.
    pub async fn reports(&mut self) -> anyhow::Result<(Vec<Follower>, Vec<Poller>)> {
        let (mut followers, mut pollers) = (Vec::new(), Vec::new());
        for p in &mut self.0 {
            for line in (&mut p.output).lines() {
                match serde_json::from_str(&line?)? {
                    Report::Follower(f) => followers.push(f),
                    Report::Poller(p) => pollers.push(p),
                }
            }
            p.child.wait()?;
        }
        Ok((followers, pollers))
    }
}

/// The `n`th of `count` near-equal parts of `0..total`.
fn share(total: usize, count: usize, n: usize) -> std::ops::Range<usize> {
    let at = |i: usize| total * i / count;
    at(n)..at(n + 1)
}

fn spawn(args: &Args, spec: &str) -> anyhow::Result<Process> {
    let mut command = Command::new(std::env::current_exe()?);
    command
        .args(["scale", "--child", spec, "--nginx", &args.nginx])
        .args(["--source-addresses", &args.source_addresses.to_string()])
        .args(["--long-polls", &args.long_polls.to_string()]);
    for instance in &args.instances {
        command.args(["--instance", instance]);
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting a client process")?;
    let input = child.stdin.take().context("stdin")?;
    let output = BufReader::new(child.stdout.take().context("stdout")?);
    Ok(Process {
        child,
        input,
        output,
    })
}

fn read_line(output: &mut BufReader<ChildStdout>) -> anyhow::Result<String> {
    let mut line = String::new();
    if output.read_line(&mut line)? == 0 {
        bail!("a client process ended early");
    }
    Ok(line.trim().to_owned())
}

/// A blocking read on this runtime's thread: the coordinator does nothing else meanwhile
/// but its webhooks, which never overlap a wait for the children.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// A client process: `spec` is `tokens-file:streams-from:streams-to:polls-from:polls-to:logins:opening`.
pub async fn serve(args: &Args, spec: &str) -> anyhow::Result<()> {
    let parts: Vec<&str> = spec.rsplitn(7, ':').collect();
    let [
        opening,
        logins,
        polls_to,
        polls_from,
        streams_to,
        streams_from,
        file,
    ] = parts[..]
    else {
        bail!("--child {spec}: expected seven fields");
    };
    let number = |s: &str| {
        s.parse::<usize>()
            .with_context(|| format!("--child {spec}"))
    };
    let tokens: Vec<String> = std::fs::read_to_string(file)?
        .lines()
        .map(str::to_owned)
        .collect();
    let instances = args
        .instances
        .iter()
        .map(|i| {
            let url = i.rsplit_once('=').map_or(i.as_str(), |(url, _)| url);
            url.trim_start_matches("http://").to_owned()
        })
        .collect();
    let clients = Clients::new(&args.nginx, instances, tokens, args.source_addresses)?;
    let share = Share {
        streams: number(streams_from)?..number(streams_to)?,
        polls: number(polls_from)?..number(polls_to)?,
        logins: number(logins)?,
        poll_step: (number(logins)? / args.long_polls.max(1)).max(1),
        opening: number(opening)?,
    };
    serve_clients(clients, share).await
}
