//! What `chute upload` and `chute download` show while they work: a bar per file and one for
//! the total (indicatif) on a terminal; plain lines every few seconds otherwise, for logs.

use std::io::IsTerminal as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chute_client::Progress;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Bars when stderr is a terminal, else plain lines.
    Auto,
    /// Bars: one per file being sent, and the total (drawn only on a terminal).
    Bar,
    /// A line per file every few seconds, on stderr.
    Plain,
    /// Nothing but the results and errors.
    None,
}

/// Plain lines come this often per file.
const PLAIN_EVERY: Duration = Duration::from_secs(2);

/// The display of one command's transfers.
#[derive(Clone)]
pub struct Display {
    bars: Option<(MultiProgress, ProgressBar)>,
    plain: bool,
    /// Files finished, of how many.
    done: Arc<Mutex<(usize, usize)>>,
}

impl Display {
    /// A display for `files` files of `bytes` bytes in all.
    pub fn new(mode: Mode, files: usize, bytes: u64) -> Self {
        let tty = std::io::stderr().is_terminal();
        let bars = matches!(mode, Mode::Bar) || (mode == Mode::Auto && tty);
        let plain = mode == Mode::Plain || (mode == Mode::Auto && !tty);
        let bars = bars.then(|| {
            // Drawn on stderr whatever it is, when asked for; stdout keeps the results.
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(8));
            let total = multi.add(ProgressBar::new(bytes));
            total.set_style(style(
                "{prefix:>5} [{bar:30.green/white}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta} {msg}",
            ));
            total.set_prefix("total");
            total.set_message(format!("0/{files} files"));
            (multi, total)
        });
        Self {
            bars,
            plain,
            done: Arc::new(Mutex::new((0, files))),
        }
    }

    /// Follows one file of `size` bytes.
    pub fn file(&self, name: &str, size: u64) -> FileProgress {
        let bar = self.bars.as_ref().map(|(multi, total)| {
            let bar = multi.insert_before(total, ProgressBar::new(size));
            bar.set_style(style(
                "{prefix:>5} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta} {wide_msg}",
            ));
            bar.set_prefix("");
            bar.set_message(name.to_string());
            (bar, total.clone())
        });
        FileProgress {
            name: name.to_string(),
            bar,
            plain: self.plain,
        }
    }

    /// Prints `line` on stdout, above the bars.
    pub fn result(&self, line: &str) {
        match &self.bars {
            Some((multi, _)) => multi.suspend(|| println!("{line}")),
            None => println!("{line}"),
        }
    }

    /// Prints `line` on stderr, above the bars.
    pub fn note(&self, line: &str) {
        match &self.bars {
            Some((multi, _)) => multi.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }

    /// One more file is over, sent or not.
    pub fn file_over(&self) {
        let Ok(mut d) = self.done.lock() else { return };
        d.0 += 1;
        if let Some((_, total)) = &self.bars {
            total.set_message(format!("{}/{} files", d.0, d.1));
        }
    }

    /// Clears the bars, leaving the total's last state.
    pub fn finish(&self) {
        if let Some((_, total)) = &self.bars {
            total.finish();
        }
    }
}

/// The progress of one file.
#[derive(Clone)]
pub struct FileProgress {
    name: String,
    /// The file's bar and the total's.
    bar: Option<(ProgressBar, ProgressBar)>,
    plain: bool,
}

impl FileProgress {
    /// A callback for the client library: each call says where the file now stands.
    pub fn callback(&self) -> impl FnMut(Progress) + Send + 'static {
        let this = self.clone();
        let started = Instant::now();
        let mut last_line = started;
        // Bytes this file counted into the total so far.
        let mut seen = 0;
        // Where this run began (a resumed file has bytes sent by an earlier one).
        let mut first = None;
        move |p: Progress| {
            let base = *first.get_or_insert(p.sent);
            if let Some((bar, total)) = &this.bar {
                bar.set_length(p.total);
                bar.set_position(p.sent);
                // A retry may go back to the server's offset: the total goes back with it.
                if p.sent >= seen {
                    total.inc(p.sent - seen);
                } else {
                    total.set_position(total.position().saturating_sub(seen - p.sent));
                }
                seen = p.sent;
            } else if this.plain && last_line.elapsed() >= PLAIN_EVERY {
                // Also at 100 %: the bytes are handed to the connection, and the kernel's
                // buffers (megabytes on a fast link) may hold them while the server is still
                // reading; the line says the file is not stuck.
                last_line = Instant::now();
                let secs = started.elapsed().as_secs_f64().max(0.001);
                eprintln!(
                    "{}: {} of {} bytes ({}%), {:.1} MiB/s",
                    this.name,
                    p.sent,
                    p.total,
                    p.sent
                        .saturating_mul(100)
                        .checked_div(p.total)
                        .unwrap_or(100),
                    (p.sent - base.min(p.sent)) as f64 / secs / f64::from(1 << 20),
                );
            }
        }
    }

    /// The file is over: its bar goes.
    pub fn clear(&self) {
        if let Some((bar, _)) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}
