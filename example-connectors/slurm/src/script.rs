//! The sbatch script, as `flyteplugins-slurm` renders it: `#SBATCH`
//! directives, modules, sorted exports, then the task's container run with
//! `srun` (a `slurm` task) or the user's own script (a `slurm_script`
//! task).

use std::collections::BTreeMap;

use flyte_connector_sdk::Error;
use serde_json::{Map, Value};

use crate::{
    custom::ContainerSettings,
    shell::{self, quote, string_repr},
};

/// Options the connector sets itself; a task may not.
const RESERVED: [&str; 7] = ["chdir", "error", "gid", "job-name", "output", "uid", "wrap"];

/// `custom.sbatch`'s fields, in the order their directives are written,
/// with their sbatch names.
const FIRST_CLASS: [(&str, &str); 12] = [
    ("partition", "partition"),
    ("nodes", "nodes"),
    ("ntasks", "ntasks"),
    ("cpus_per_task", "cpus-per-task"),
    ("gres", "gres"),
    ("gpus_per_node", "gpus-per-node"),
    ("mem", "mem"),
    ("time_limit", "time"),
    ("account", "account"),
    ("qos", "qos"),
    ("reservation", "reservation"),
    ("constraint", "constraint"),
];

/// Makes a container's `PATH` lead with its virtualenv, then runs the
/// command.
const PATH_SHIM: &str = "export PATH=\"${VIRTUAL_ENV:+$VIRTUAL_ENV/bin:}$PATH\"; exec \"$@\"";

/// A job's name: `flyte-<task>-<suffix>`, `<task>` being the last dotted
/// part of the template's name with anything but `[A-Za-z0-9_.-]` made
/// `-`, cut to 40 characters and trimmed of `-` and `.`.
pub fn job_name(template_name: &str, suffix: &str) -> String {
    let last = template_name.rsplit('.').next().unwrap_or_default();
    let cleaned: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    let base = cleaned.trim_matches(|c| c == '-' || c == '.');
    let base = if base.is_empty() { "task" } else { base };
    format!("flyte-{base}-{suffix}")
}

/// The files of one job, in its working folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFiles {
    pub script: String,
    pub stdout: String,
    pub stderr: String,
    /// Where the job writes outputs the connector moves.
    pub outputs: String,
}

impl JobFiles {
    /// `working_dir/job_name.{sbatch,out,err,outputs}`.
    pub fn new(working_dir: &str, job_name: &str) -> Self {
        let at = |suffix: &str| path_join(working_dir, &format!("{job_name}.{suffix}"));
        Self {
            script: at("sbatch"),
            stdout: at("out"),
            stderr: at("err"),
            outputs: at("outputs"),
        }
    }
}

/// `posixpath.join(dir, name)` for a relative `name`.
pub fn path_join(dir: &str, name: &str) -> String {
    if dir.is_empty() || dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// The `#SBATCH` lines: the job's name and files, the first-class fields
/// in their fixed order, then `options` (a name equal to a first-class
/// flag replaces its value in place). Reserved names, bad names and
/// values holding whitespace are refused, naming them.
pub fn directives(
    job_name: &str,
    files: &JobFiles,
    sbatch: &Map<String, Value>,
    options: &Map<String, Value>,
) -> Result<Vec<String>, Error> {
    let mut ordered: Vec<(String, Value)> = vec![
        ("job-name".into(), Value::String(job_name.into())),
        ("output".into(), Value::String(files.stdout.clone())),
        ("error".into(), Value::String(files.stderr.clone())),
    ];
    for (field, flag) in FIRST_CLASS {
        if let Some(value) = sbatch.get(field).filter(|v| !v.is_null()) {
            ordered.push((flag.to_owned(), value.clone()));
        }
    }
    if let Some(reserved) = options.keys().find(|k| RESERVED.contains(&k.as_str())) {
        return Err(Error::invalid_request(format!(
            "sbatch option {} is set by the plugin and cannot be overridden from task config. \
             Reserved: {}.",
            string_repr(reserved),
            RESERVED.join(", ")
        )));
    }
    for (name, value) in options {
        match ordered.iter_mut().find(|(key, _)| key == name) {
            Some(slot) => slot.1 = value.clone(),
            None => ordered.push((name.clone(), value.clone())),
        }
    }
    ordered
        .iter()
        .map(|(key, value)| directive(key, value))
        .collect()
}

fn directive(key: &str, value: &Value) -> Result<String, Error> {
    let mut chars = key.chars();
    let valid_name = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid_name {
        return Err(Error::invalid_request(format!(
            "Invalid sbatch option name: {}",
            string_repr(key)
        )));
    }
    let rendered = match value {
        Value::Bool(true) | Value::Null => return Ok(format!("#SBATCH --{key}")),
        Value::Number(n) => shell::number(n),
        other => shell::python_str(other),
    };
    if rendered.chars().any(is_python_space) {
        return Err(Error::invalid_request(format!(
            "sbatch option {} may not contain whitespace: {}. Whitespace is refused because a \
             single value could otherwise smuggle in a second option, or end the directive \
             entirely.",
            string_repr(key),
            string_repr(&rendered)
        )));
    }
    Ok(format!("#SBATCH --{key}={rendered}"))
}

/// Python's `str.isspace` for one character.
fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// `module load NAME` lines; a name holding whitespace is refused.
pub fn module_lines(modules: &[String]) -> Result<Vec<String>, Error> {
    if let Some(bad) = modules.iter().find(|m| m.chars().any(is_python_space)) {
        return Err(Error::invalid_request(format!(
            "module name may not contain whitespace: {}",
            string_repr(bad)
        )));
    }
    Ok(modules
        .iter()
        .map(|m| format!("module load {}", quote(m)))
        .collect())
}

/// `export NAME=VALUE` lines, sorted by name; a name that is not a shell
/// variable's is refused.
pub fn export_lines(env: &BTreeMap<String, String>) -> Result<Vec<String>, Error> {
    env.iter()
        .map(|(key, value)| {
            let mut chars = key.chars();
            let valid = chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
            if valid {
                Ok(format!("export {key}={}", quote(value)))
            } else {
                Err(Error::invalid_request(format!(
                    "Invalid environment variable name: {}",
                    string_repr(key)
                )))
            }
        })
        .collect()
}

/// `NAME` as an environment variable's suffix: anything but
/// `[A-Za-z0-9_]` made `_`, upper case (`FLYTE_INPUT_<NAME>`).
pub fn env_suffix(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// What a `slurm` task runs.
pub struct ContainerJob<'a> {
    /// The image: `custom.container.image`, else the template's.
    pub image: &'a str,
    /// The template's container command and arguments.
    pub command: &'a [String],
    pub settings: &'a ContainerSettings,
    /// Whether the job asks for GPUs (`gres` naming a gpu, or
    /// `gpus_per_node`): apptainer then gets `--nv`.
    pub gpus: bool,
}

impl ContainerJob<'_> {
    /// The `srun` line running the command in the container.
    pub fn srun_line(&self) -> Result<String, Error> {
        if self.command.is_empty() {
            return Err(Error::invalid_request(
                "A container job needs a non-empty command",
            ));
        }
        let settings = self.settings;
        let mounts = settings.mounts.clone().unwrap_or_default();
        let workdir = settings.workdir.clone().filter(|w| !w.is_empty());
        let args = settings.args.clone().unwrap_or_default();
        let mut argv: Vec<String> = vec!["srun".into(), "--nodes=1".into(), "--ntasks=1".into()];
        argv.extend(settings.srun_args.clone().unwrap_or_default());
        match settings.runtime.as_deref().filter(|r| !r.is_empty()) {
            None | Some("pyxis") => {
                argv.push(format!("--container-image={}", pyxis_image(self.image)));
                if !mounts.is_empty() {
                    argv.push(format!("--container-mounts={}", mounts.join(",")));
                }
                if let Some(workdir) = workdir {
                    argv.push(format!("--container-workdir={workdir}"));
                }
                argv.extend(args);
            }
            Some("apptainer") => {
                argv.extend(["apptainer".into(), "exec".into()]);
                if self.gpus && !args.iter().any(|a| a == "--nv" || a == "--rocm") {
                    argv.push("--nv".into());
                }
                if !mounts.is_empty() {
                    argv.extend(["--bind".into(), mounts.join(",")]);
                }
                if let Some(workdir) = workdir {
                    argv.extend(["--pwd".into(), workdir]);
                }
                argv.extend(args);
                argv.push(apptainer_image(self.image));
            }
            Some(other) => {
                return Err(Error::invalid_request(format!(
                    "Unknown container_runtime {}; expected one of: pyxis, apptainer.",
                    string_repr(other)
                )));
            }
        }
        argv.extend(["bash".into(), "-c".into(), PATH_SHIM.into(), "--".into()]);
        argv.extend(self.command.iter().cloned());
        Ok(shell::join(&argv))
    }
}

/// An image as Pyxis names it: a registry host separated by `#` rather
/// than `/` (`ghcr.io/x/y:1` → `ghcr.io#x/y:1`), `docker://` dropped;
/// paths and names already holding `#` unchanged.
pub fn pyxis_image(image: &str) -> String {
    if image.starts_with('/') || image.starts_with("./") || image.contains('#') {
        return image.to_owned();
    }
    let image = image.strip_prefix("docker://").unwrap_or(image);
    match image.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            format!("{first}#{rest}")
        }
        _ => image.to_owned(),
    }
}

/// An image as apptainer names it: `docker://` unless it is a path or
/// already names a transport.
pub fn apptainer_image(image: &str) -> String {
    const TRANSPORTS: [&str; 5] = [
        "docker://",
        "oras://",
        "library://",
        "shub://",
        "docker-daemon://",
    ];
    if image.starts_with('/')
        || image.starts_with("./")
        || TRANSPORTS.iter().any(|t| image.starts_with(t))
    {
        image.to_owned()
    } else {
        format!("docker://{image}")
    }
}

/// The parts every script shares.
pub struct Preamble {
    pub directives: Vec<String>,
    pub modules: Vec<String>,
    pub exports: Vec<String>,
}

/// A `slurm` task's script: strict bash, then `srun`.
pub fn container_script(preamble: &Preamble, srun_line: &str) -> String {
    let mut lines = vec!["#!/bin/bash".to_owned()];
    lines.extend(preamble.directives.iter().cloned());
    lines.push(String::new());
    lines.push("set -euo pipefail".to_owned());
    lines.extend(preamble.modules.iter().cloned());
    lines.extend(preamble.exports.iter().cloned());
    lines.push(String::new());
    lines.push(srun_line.to_owned());
    lines.push(String::new());
    lines.join("\n")
}

/// A `slurm_script` task's script: the user's leading `#SBATCH` lines
/// first, then the connector's, modules and exports, then the user's
/// script from its first command. `prelude`, when given, is a command put
/// before the user's script (which then hoists none of its directives,
/// as with the Python connector).
pub fn user_script(preamble: &Preamble, script: &str, prelude: Option<&str>) -> String {
    let script = match prelude {
        Some(prelude) => format!("{prelude}\n{script}"),
        None => script.to_owned(),
    };
    let (hoisted, mut body) = split_leading_directives(&script);
    if !body.is_empty() && !body.ends_with('\n') {
        body.push('\n');
    }
    let mut lines = vec!["#!/bin/bash".to_owned()];
    lines.extend(hoisted);
    lines.extend(preamble.directives.iter().cloned());
    lines.push(String::new());
    lines.extend(preamble.modules.iter().cloned());
    lines.extend(preamble.exports.iter().cloned());
    lines.push(String::new());
    lines.push(body);
    lines.join("\n")
}

/// The `#SBATCH` lines before a script's first command (a leading `#!`
/// line skipped; blank lines and comments before the first command
/// dropped), and the script from that command on.
fn split_leading_directives(script: &str) -> (Vec<String>, String) {
    let mut lines = python_lines(script);
    if lines.first().is_some_and(|l| l.starts_with("#!")) {
        lines.remove(0);
    }
    let mut directives = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        let stripped = line.trim_matches(is_python_space);
        if stripped.starts_with("#SBATCH") {
            directives.push(stripped.to_owned());
        } else if !stripped.is_empty() && !stripped.starts_with('#') {
            return (directives, lines[index..].join("\n"));
        }
    }
    (directives, String::new())
}

/// `text.splitlines()` as Python splits a `str`.
fn python_lines(text: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        let ends_line = matches!(
            c,
            '\n' | '\r'
                | '\u{0b}'
                | '\u{0c}'
                | '\u{1c}'
                | '\u{1d}'
                | '\u{1e}'
                | '\u{85}'
                | '\u{2028}'
                | '\u{2029}'
        );
        if !ends_line {
            continue;
        }
        lines.push(&text[start..at]);
        let mut next = at + c.len_utf8();
        if c == '\r' && chars.peek().is_some_and(|(_, n)| *n == '\n') {
            chars.next();
            next += 1;
        }
        start = next;
    }
    if start < text.len() {
        lines.push(&text[start..]);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    fn files() -> JobFiles {
        JobFiles::new("/home/flyte/.flyte/jobs", "flyte-train-12345678")
    }

    #[test]
    fn job_names_are_the_python_connectors() {
        assert_eq!(job_name("train.train", "1a2b3c4d"), "flyte-train-1a2b3c4d");
        assert_eq!(
            job_name(
                "my.mod.Some Task!!xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
                "00000000"
            ),
            "flyte-Some-Task--xxxxxxxxxxxxxxxxxxxxxxxxxxxxx-00000000"
        );
        assert_eq!(job_name("", "00000000"), "flyte-task-00000000");
        assert_eq!(job_name("a.---", "00000000"), "flyte-task-00000000");
    }

    #[test]
    fn the_container_script_is_the_python_connectors() {
        let sbatch = map(json!({"nodes": 2.0, "gres": "gpu:8", "partition": "main",
                                "time_limit": "4:00:00", "gpus_per_node": 8.0}));
        let options = map(json!({"mail-type": "FAIL", "n": 3.0, "exclusive": true,
                                 "partition": "other"}));
        let directives =
            directives("flyte-train-12345678", &files(), &sbatch, &options).expect("directives");
        let env: BTreeMap<String, String> = [
            ("A", "b c"),
            ("ACTION_NAME", "a1"),
            ("Z", "it's"),
            ("_U_ORG_NAME", "myorg"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let preamble = Preamble {
            directives,
            modules: module_lines(&["apptainer".into(), "cuda/12.2".into()]).expect("modules"),
            exports: export_lines(&env).expect("exports"),
        };
        let settings = ContainerSettings {
            runtime: Some("pyxis".into()),
            mounts: Some(vec!["/data:/data".into(), "/x:/y:ro".into()]),
            workdir: Some("/w".into()),
            srun_args: Some(vec!["--mpi=pmix".into(), "--export=ALL".into()]),
            ..ContainerSettings::default()
        };
        let command: Vec<String> = ["a0", "--inputs", "{{.input}}", "--version", "v1"]
            .map(String::from)
            .to_vec();
        let job = ContainerJob {
            image: "ghcr.io/org/img:tag",
            command: &command,
            settings: &settings,
            gpus: true,
        };
        let script = container_script(&preamble, &job.srun_line().expect("srun"));
        assert_eq!(
            script,
            "#!/bin/bash\n\
             #SBATCH --job-name=flyte-train-12345678\n\
             #SBATCH --output=/home/flyte/.flyte/jobs/flyte-train-12345678.out\n\
             #SBATCH --error=/home/flyte/.flyte/jobs/flyte-train-12345678.err\n\
             #SBATCH --partition=other\n\
             #SBATCH --nodes=2\n\
             #SBATCH --gres=gpu:8\n\
             #SBATCH --gpus-per-node=8\n\
             #SBATCH --time=4:00:00\n\
             #SBATCH --mail-type=FAIL\n\
             #SBATCH --n=3\n\
             #SBATCH --exclusive\n\
             \n\
             set -euo pipefail\n\
             module load apptainer\n\
             module load cuda/12.2\n\
             export A='b c'\n\
             export ACTION_NAME=a1\n\
             export Z='it'\"'\"'s'\n\
             export _U_ORG_NAME=myorg\n\
             \n\
             srun --nodes=1 --ntasks=1 --mpi=pmix --export=ALL \
             '--container-image=ghcr.io#org/img:tag' --container-mounts=/data:/data,/x:/y:ro \
             --container-workdir=/w bash -c \
             'export PATH=\"${VIRTUAL_ENV:+$VIRTUAL_ENV/bin:}$PATH\"; exec \"$@\"' \
             -- a0 --inputs '{{.input}}' --version v1\n"
        );
    }

    #[test]
    fn apptainer_gets_nv_for_gpus_unless_the_task_chose() {
        let command = vec!["a0".to_owned()];
        let mut settings = ContainerSettings {
            runtime: Some("apptainer".into()),
            mounts: Some(vec!["/data:/data".into()]),
            workdir: Some("/w".into()),
            ..ContainerSettings::default()
        };
        let line = |settings: &ContainerSettings| {
            ContainerJob {
                image: "ghcr.io/org/img:tag",
                command: &command,
                settings,
                gpus: true,
            }
            .srun_line()
            .expect("srun")
        };
        assert!(
            line(&settings).starts_with(
                "srun --nodes=1 --ntasks=1 apptainer exec --nv --bind /data:/data --pwd /w \
                 docker://ghcr.io/org/img:tag bash -c"
            ),
            "{}",
            line(&settings)
        );
        settings.args = Some(vec!["--rocm".into(), "--cleanenv".into()]);
        assert!(line(&settings).contains("--pwd /w --rocm --cleanenv docker://"));
        settings.runtime = Some("docker".into());
        let err = ContainerJob {
            image: "i",
            command: &command,
            settings: &settings,
            gpus: false,
        }
        .srun_line()
        .expect_err("unknown runtime");
        assert_eq!(
            err.message(),
            "Unknown container_runtime 'docker'; expected one of: pyxis, apptainer."
        );
    }

    #[test]
    fn images_are_named_as_each_runtime_wants() {
        for (image, pyxis) in [
            ("ghcr.io/x/y:1", "ghcr.io#x/y:1"),
            ("docker://python:3", "python:3"),
            ("localhost/img", "localhost#img"),
            ("localhost:5000/img", "localhost:5000#img"),
            ("user/img", "user/img"),
            ("img.sqsh", "img.sqsh"),
            ("/images/a.sqsh", "/images/a.sqsh"),
        ] {
            assert_eq!(pyxis_image(image), pyxis, "{image}");
        }
        assert_eq!(apptainer_image("python:3"), "docker://python:3");
        assert_eq!(apptainer_image("oras://r/i"), "oras://r/i");
        assert_eq!(apptainer_image("./i.sif"), "./i.sif");
    }

    #[test]
    fn bad_directives_are_refused_with_the_python_connectors_words() {
        let err = directives("j", &files(), &Map::new(), &map(json!({"chdir": "/x"})))
            .expect_err("reserved");
        assert_eq!(
            err.message(),
            "sbatch option 'chdir' is set by the plugin and cannot be overridden from task \
             config. Reserved: chdir, error, gid, job-name, output, uid, wrap."
        );
        let err =
            directives("j", &files(), &Map::new(), &map(json!({"Mem": "1G"}))).expect_err("name");
        assert_eq!(err.message(), "Invalid sbatch option name: 'Mem'");
        let err = directives(
            "j",
            &files(),
            &map(json!({"mem": "1G --uid=0"})),
            &Map::new(),
        )
        .expect_err("space");
        assert!(
            err.message()
                .starts_with("sbatch option 'mem' may not contain whitespace: '1G --uid=0'."),
            "{}",
            err.message()
        );
        let spaced = JobFiles::new("/my jobs", "j");
        let err = directives("j", &spaced, &Map::new(), &Map::new()).expect_err("output");
        assert!(err.message().starts_with("sbatch option 'output'"));
        assert_eq!(
            directive("requeue", &json!(false)).expect("false"),
            "#SBATCH --requeue=False"
        );
        assert!(module_lines(&["a b".into()]).is_err());
        let env = BTreeMap::from([("1X".to_owned(), String::new())]);
        assert_eq!(
            export_lines(&env).expect_err("name").message(),
            "Invalid environment variable name: '1X'"
        );
    }

    const USER_SCRIPT: &str = "#!/bin/bash\n\n# comment\n#SBATCH --time=1:00\n  #SBATCH \
                               --mem=1G\necho hi\n#SBATCH --late\ncp x \"$FLYTE_OUTPUT_MODEL\"";

    fn preamble() -> Preamble {
        Preamble {
            directives: vec!["#SBATCH --job-name=j".into()],
            modules: vec!["module load m".into()],
            exports: vec!["export A=platform".into()],
        }
    }

    #[test]
    fn a_users_leading_directives_are_hoisted() {
        assert_eq!(
            user_script(&preamble(), USER_SCRIPT, None),
            "#!/bin/bash\n#SBATCH --time=1:00\n#SBATCH --mem=1G\n#SBATCH --job-name=j\n\n\
             module load m\nexport A=platform\n\necho hi\n#SBATCH --late\n\
             cp x \"$FLYTE_OUTPUT_MODEL\"\n"
        );
    }

    #[test]
    fn a_prelude_command_keeps_the_users_directives_in_the_body_as_python_does() {
        assert_eq!(
            user_script(&preamble(), USER_SCRIPT, Some("mkdir -p /w/j.outputs")),
            "#!/bin/bash\n#SBATCH --job-name=j\n\nmodule load m\nexport A=platform\n\n\
             mkdir -p /w/j.outputs\n#!/bin/bash\n\n# comment\n#SBATCH --time=1:00\n  #SBATCH \
             --mem=1G\necho hi\n#SBATCH --late\ncp x \"$FLYTE_OUTPUT_MODEL\"\n"
        );
    }

    #[test]
    fn an_empty_body_ends_the_script_after_the_exports() {
        assert_eq!(
            user_script(&preamble(), "#SBATCH --time=1\r\n# only comments\r\n", None),
            "#!/bin/bash\n#SBATCH --time=1\n#SBATCH --job-name=j\n\nmodule load m\n\
             export A=platform\n\n"
        );
        assert_eq!(python_lines("a\r\nb\rc\u{2028}d\n"), ["a", "b", "c", "d"]);
    }

    #[test]
    fn env_suffixes_are_upper_case_identifiers() {
        assert_eq!(env_suffix("model"), "MODEL");
        assert_eq!(env_suffix("x-y.z é"), "X_Y_Z__");
    }
}
