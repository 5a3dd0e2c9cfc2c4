use std::process::ExitCode;

use redis_proxy::config::Config;

/// mimalloc's size classes fit small cache entries more tightly than
/// glibc's (an entry of 73 bytes takes 80, not 96), and it is fast.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let mut config = Config::from_env_or_exit();
    redis_proxy::telemetry::init(config.log_format);
    // Before anything opens a socket: a proxy that accepts clients it has no
    // file descriptors for fails them at random, so it does not start.
    let fitted = redis_proxy::server::fit_open_files(
        config.max_clients,
        config.max_pinned_connections,
        config.max_clients_given,
    );
    match fitted {
        Ok((open_files, clients, warning)) => {
            tracing::debug!(open_files, "RLIMIT_NOFILE");
            if let Some(warning) = warning {
                tracing::warn!("{warning}");
            }
            config.max_clients = clients;
        }
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
    if let (Some(seeds), Some(lease)) = (&config.redis_cluster, config.lease()) {
        let tls = config.redis_tls().ok().flatten();
        let checked = redis_proxy::cluster::check_lease(seeds, tls, lease, config.backend_timeout);
        if let Err(e) = runtime.block_on(checked) {
            tracing::error!("{e}");
            return ExitCode::from(2);
        }
    }
    match runtime.block_on(redis_proxy::server::run_until_signalled(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
