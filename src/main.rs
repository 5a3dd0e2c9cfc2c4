use std::process::ExitCode;

use redis_proxy::config::Config;

/// mimalloc's size classes fit small cache entries more tightly than
/// glibc's (an entry of 73 bytes takes 80, not 96), and it is fast.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let config = Config::from_env_or_exit();
    redis_proxy::telemetry::init(config.log_format);
    // Before anything opens a socket: a proxy that accepts clients it has no
    // file descriptors for fails them at random, so it does not start.
    match redis_proxy::server::fit_open_files(config.max_clients, config.max_pinned_connections) {
        Ok(open_files) => tracing::debug!(open_files, "RLIMIT_NOFILE"),
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(2);
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.threads())
        .enable_all()
        .build()
        .expect("starting the Tokio runtime");
    match runtime.block_on(redis_proxy::server::run_until_signalled(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
