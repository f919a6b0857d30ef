//! Windows: the node as a service of the Service Control Manager (crate `windows-service`),
//! run as LocalSystem (wintun adapters need an administrator) on `%ProgramData%\re6mesh`.
//! The SCM starts `mesh.exe service run --state-dir DIR`, the service's entry point
//! ([`run_dispatcher`]), which runs the node until the SCM asks it to stop. Install, uninstall
//! and status call the SCM API directly (no `sc.exe`).
//!
//! What the service is (name, command line, start mode) is plain data here, compiled and tested
//! on every OS; the SCM calls exist on Windows only.

use std::ffi::OsString;
use std::path::Path;

/// The service's name for the SCM (`sc query re6mesh`, `Get-Service re6mesh`).
pub const NAME: &str = "re6mesh";
/// The name the Services console shows.
pub const DISPLAY_NAME: &str = "re6mesh node";
/// The description the Services console shows.
pub const DESCRIPTION: &str = "IPv6 mesh network node: QUIC tunnels, Babel routing, a wintun adapter. Options: node.toml in the state directory (`mesh set KEY=VALUE --state-dir DIR`).";
/// Seconds the SCM waits before restarting a failed node.
pub const RESTART_DELAY_SECS: u64 = 10;

/// The arguments the SCM passes to `mesh.exe`: the service entry point on `state_dir`.
pub fn launch_arguments(state_dir: &Path) -> Vec<OsString> {
    vec![
        "service".into(),
        "run".into(),
        "--state-dir".into(),
        state_dir.as_os_str().to_owned(),
    ]
}

/// `arg` quoted for a Windows command line (the rules `CommandLineToArgvW` reads back).
pub fn quote_arg(arg: &str) -> String {
    if !arg.is_empty() && !arg.contains([' ', '\t', '"']) {
        return arg.to_owned();
    }
    let mut out = String::from("\"");
    let mut backslashes = 0;
    for c in arg.chars() {
        match c {
            '\\' => backslashes += 1,
            '"' => {
                // backslashes before a quote are doubled, and the quote escaped
                out.push_str(&"\\".repeat(backslashes * 2 + 1));
                out.push('"');
                backslashes = 0;
            }
            c => {
                out.push_str(&"\\".repeat(backslashes));
                out.push(c);
                backslashes = 0;
            }
        }
    }
    // backslashes before the closing quote are doubled
    out.push_str(&"\\".repeat(backslashes * 2));
    out.push('"');
    out
}

/// What `mesh service install --print` shows: the service as the SCM will hold it.
pub fn describe(exe: &Path, state_dir: &Path) -> String {
    let mut line = quote_arg(&exe.to_string_lossy());
    for a in launch_arguments(state_dir) {
        line.push(' ');
        line.push_str(&quote_arg(&a.to_string_lossy()));
    }
    format!(
        "service name    {NAME}\n\
         display name    {DISPLAY_NAME}\n\
         command line    {line}\n\
         start           automatic (at boot), as LocalSystem\n\
         on failure      restart after {RESTART_DELAY_SECS} s (three times a day)\n\
         logs            {}\n",
        state_dir.join(LOG_FILE).display()
    )
}

/// The node's log file in the state directory (a service has no console).
pub const LOG_FILE: &str = "node.log";

#[cfg(windows)]
pub use scm::{install, run_dispatcher, status, uninstall};

/// The stop future given to the service body: completes when the SCM asks the
/// service to stop (or the machine shuts down).
pub type StopSignal = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// What the service runs: the node on its state directory, until the stop signal.
pub type ServiceBody = Box<dyn FnOnce(StopSignal) -> anyhow::Result<()> + Send>;

#[cfg(windows)]
mod scm {
    use std::ffi::OsString;
    use std::sync::Mutex;
    use std::time::Duration;

    use anyhow::Context;
    use windows_service::service::{
        ServiceAccess, ServiceAction, ServiceActionType, ServiceControl, ServiceControlAccept,
        ServiceErrorControl, ServiceExitCode, ServiceFailureActions, ServiceFailureResetPeriod,
        ServiceInfo, ServiceStartType, ServiceState, ServiceStatus, ServiceType,
    };
    use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
    use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};
    use windows_service::{define_windows_service, service_dispatcher};

    use super::super::{InstallOptions, status_line};
    use super::{
        DESCRIPTION, DISPLAY_NAME, NAME, RESTART_DELAY_SECS, ServiceBody, describe,
        launch_arguments,
    };

    /// ERROR_ACCESS_DENIED
    const ACCESS_DENIED: i32 = 5;
    /// ERROR_SERVICE_DOES_NOT_EXIST
    const NO_SUCH_SERVICE: i32 = 1060;
    /// ERROR_SERVICE_EXISTS
    const SERVICE_EXISTS: i32 = 1073;
    /// ERROR_FAILED_SERVICE_CONTROLLER_CONNECT: not started by the SCM.
    const NOT_A_SERVICE: i32 = 1063;

    fn os_code(e: &windows_service::Error) -> Option<i32> {
        match e {
            windows_service::Error::Winapi(io) => io.raw_os_error(),
            _ => None,
        }
    }

    /// An SCM error as one sentence, with what to do for the usual ones.
    fn scm_error(what: &str, e: windows_service::Error) -> anyhow::Error {
        match os_code(&e) {
            Some(ACCESS_DENIED) => {
                anyhow::anyhow!("{what}: access denied; run it from an Administrator prompt")
            }
            _ => anyhow::Error::new(e).context(what.to_owned()),
        }
    }

    fn manager(access: ServiceManagerAccess) -> anyhow::Result<ServiceManager> {
        ServiceManager::local_computer(None::<&str>, access)
            .map_err(|e| scm_error("cannot open the Service Control Manager", e))
    }

    /// Creates (or updates) the service, automatic start, restart on failure; starts it when
    /// this machine has joined.
    pub fn install(o: InstallOptions) -> anyhow::Result<()> {
        let exe = std::env::current_exe().context("cannot find the path of this program")?;
        let dir = crate::paths::system_node_dir();
        if o.print {
            print!("{}", describe(&exe, &dir));
            return Ok(());
        }
        let info = ServiceInfo {
            name: OsString::from(NAME),
            display_name: OsString::from(DISPLAY_NAME),
            service_type: ServiceType::OWN_PROCESS,
            start_type: ServiceStartType::AutoStart,
            error_control: ServiceErrorControl::Normal,
            executable_path: exe.clone(),
            launch_arguments: launch_arguments(&dir),
            dependencies: vec![],
            // LocalSystem
            account_name: None,
            account_password: None,
        };
        let scm = manager(ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE)?;
        let access =
            ServiceAccess::CHANGE_CONFIG | ServiceAccess::START | ServiceAccess::QUERY_STATUS;
        let service = match scm.create_service(&info, access) {
            Ok(s) => {
                println!("created service {NAME} ({})", exe.display());
                s
            }
            Err(e) if os_code(&e) == Some(SERVICE_EXISTS) => {
                let s = scm
                    .open_service(NAME, access)
                    .map_err(|e| scm_error("cannot open service re6mesh", e))?;
                s.change_config(&info)
                    .map_err(|e| scm_error("cannot update service re6mesh", e))?;
                println!("updated service {NAME} ({})", exe.display());
                s
            }
            Err(e) => return Err(scm_error("cannot create service re6mesh", e)),
        };
        service
            .set_description(DESCRIPTION)
            .map_err(|e| scm_error("cannot describe service re6mesh", e))?;
        let restart = ServiceAction {
            action_type: ServiceActionType::Restart,
            delay: Duration::from_secs(RESTART_DELAY_SECS),
        };
        service
            .update_failure_actions(ServiceFailureActions {
                reset_period: ServiceFailureResetPeriod::After(Duration::from_secs(24 * 3600)),
                reboot_msg: None,
                command: None,
                actions: Some(vec![restart.clone(), restart.clone(), restart]),
            })
            .map_err(|e| scm_error("cannot set the restart policy of service re6mesh", e))?;
        // a node that exits with an error (not only a crash) is restarted too
        service
            .set_failure_actions_on_non_crash_failures(true)
            .map_err(|e| scm_error("cannot set the restart policy of service re6mesh", e))?;
        if crate::state::is_joined(&dir) {
            let running = service
                .query_status()
                .is_ok_and(|s| s.current_state != ServiceState::Stopped);
            if !running {
                service
                    .start::<&str>(&[])
                    .map_err(|e| scm_error("cannot start service re6mesh", e))?;
            }
            println!("the node runs now and at every boot");
        } else {
            println!(
                "it starts at boot once this machine has joined: `mesh join TOKEN --state-dir \"{}\"`, then `Start-Service {NAME}`",
                dir.display()
            );
        }
        Ok(())
    }

    /// Stops and deletes the service (the state directory stays).
    pub fn uninstall() -> anyhow::Result<()> {
        let scm = manager(ServiceManagerAccess::CONNECT)?;
        let service = match scm.open_service(
            NAME,
            ServiceAccess::QUERY_STATUS | ServiceAccess::STOP | ServiceAccess::DELETE,
        ) {
            Ok(s) => s,
            Err(e) if os_code(&e) == Some(NO_SUCH_SERVICE) => {
                println!("service {NAME} is not installed");
                return Ok(());
            }
            Err(e) => return Err(scm_error("cannot open service re6mesh", e)),
        };
        if service
            .query_status()
            .is_ok_and(|s| s.current_state != ServiceState::Stopped)
        {
            service
                .stop()
                .map_err(|e| scm_error("cannot stop service re6mesh", e))?;
            println!("asked service {NAME} to stop");
        }
        // deleted once stopped and every handle to it is closed
        service
            .delete()
            .map_err(|e| scm_error("cannot delete service re6mesh", e))?;
        println!(
            "removed service {NAME}; the state directory {} is kept",
            crate::paths::system_node_dir().display()
        );
        Ok(())
    }

    /// Is the service installed, how does it start, is it running.
    pub fn status() -> anyhow::Result<()> {
        let scm = manager(ServiceManagerAccess::CONNECT)?;
        let service = match scm.open_service(
            NAME,
            ServiceAccess::QUERY_STATUS | ServiceAccess::QUERY_CONFIG,
        ) {
            Ok(s) => s,
            Err(e) if os_code(&e) == Some(NO_SUCH_SERVICE) => {
                status_line("service", &format!("{NAME} (not installed)"));
                return Ok(());
            }
            Err(e) => return Err(scm_error("cannot open service re6mesh", e)),
        };
        status_line("service", &format!("{NAME} (installed)"));
        if let Ok(c) = service.query_config() {
            status_line("program", &c.executable_path.to_string_lossy());
            status_line("start", &format!("{:?}", c.start_type));
        }
        let s = service
            .query_status()
            .map_err(|e| scm_error("cannot query service re6mesh", e))?;
        status_line("state", &format!("{:?}", s.current_state));
        if let Some(pid) = s.process_id {
            status_line("pid", &pid.to_string());
        }
        Ok(())
    }

    /// The body `run_dispatcher` was given, for the SCM's thread to take.
    static BODY: Mutex<Option<ServiceBody>> = Mutex::new(None);

    define_windows_service!(ffi_service_main, service_main);

    /// The service's entry point (`mesh service run`): connects to the SCM, which calls the
    /// service main on its own thread; that runs `body` until the SCM says stop. Returns when
    /// the service has stopped. Run by hand (not by the SCM), it says so in one sentence.
    pub fn run_dispatcher(body: ServiceBody) -> anyhow::Result<()> {
        if let Ok(mut slot) = BODY.lock() {
            *slot = Some(body);
        }
        match service_dispatcher::start(NAME, ffi_service_main) {
            Ok(()) => Ok(()),
            Err(e) if os_code(&e) == Some(NOT_A_SERVICE) => Err(crate::cli::Unavailable(
                "`mesh service run` is what the Windows service runs; start the service (`Start-Service re6mesh`) or run `mesh up` here".to_owned(),
            )
            .into()),
            Err(e) => Err(anyhow::Error::new(e).context("cannot connect to the Service Control Manager")),
        }
    }

    fn service_main(_arguments: Vec<OsString>) {
        if let Err(e) = serve() {
            tracing::error!(error = %format!("{e:#}"), "service re6mesh failed");
        }
    }

    fn status_of(state: ServiceState, exit_code: ServiceExitCode) -> ServiceStatus {
        ServiceStatus {
            service_type: ServiceType::OWN_PROCESS,
            current_state: state,
            controls_accepted: if state == ServiceState::Running {
                ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN
            } else {
                ServiceControlAccept::empty()
            },
            exit_code,
            checkpoint: 0,
            wait_hint: if state == ServiceState::StopPending {
                Duration::from_secs(10)
            } else {
                Duration::default()
            },
            process_id: None,
        }
    }

    fn serve() -> anyhow::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let mut tx = Some(tx);
        let handler = move |event| match event {
            ServiceControl::Stop | ServiceControl::Shutdown => {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(());
                }
                ServiceControlHandlerResult::NoError
            }
            ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
            _ => ServiceControlHandlerResult::NotImplemented,
        };
        let handle = service_control_handler::register(NAME, handler).map_err(|e| {
            anyhow::Error::new(e).context("cannot register the service's control handler")
        })?;
        handle.set_service_status(status_of(ServiceState::Running, ServiceExitCode::NO_ERROR))?;
        let body = BODY.lock().ok().and_then(|mut b| b.take());
        let result = match body {
            Some(body) => body(Box::pin(async move {
                let _ = rx.await;
                tracing::info!("the Service Control Manager asked the node to stop");
            })),
            None => Err(anyhow::anyhow!("the service started without a body")),
        };
        let code = match &result {
            Ok(()) => ServiceExitCode::NO_ERROR,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "the node stopped");
                ServiceExitCode::ServiceSpecific(1)
            }
        };
        handle.set_service_status(status_of(ServiceState::Stopped, code))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn service_runs_the_entry_point_on_the_state_directory() {
        let dir = PathBuf::from(r"C:\ProgramData\re6mesh");
        assert_eq!(
            launch_arguments(&dir),
            ["service", "run", "--state-dir", r"C:\ProgramData\re6mesh"]
                .map(OsString::from)
                .to_vec()
        );
        let d = describe(Path::new(r"C:\Program Files\re6mesh\mesh.exe"), &dir);
        assert!(
            d.contains(
                r#"command line    "C:\Program Files\re6mesh\mesh.exe" service run --state-dir C:\ProgramData\re6mesh"#
            ),
            "{d}"
        );
        assert!(d.contains("service name    re6mesh\n"), "{d}");
        assert!(d.contains("automatic (at boot), as LocalSystem"), "{d}");
    }

    /// Quoting as `CommandLineToArgvW` reads it back.
    #[test]
    fn arguments_are_quoted_for_windows() {
        assert_eq!(quote_arg("plain"), "plain");
        assert_eq!(quote_arg(""), r#""""#);
        assert_eq!(quote_arg("a b"), r#""a b""#);
        assert_eq!(quote_arg(r"C:\dir with space\"), r#""C:\dir with space\\""#);
        assert_eq!(quote_arg(r#"say "hi""#), r#""say \"hi\"""#);
        assert_eq!(quote_arg(r#"a\"b c"#), r#""a\\\"b c""#);
    }
}
