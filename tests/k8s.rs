//! The Kubernetes manifests, validated offline: each kustomize overlay builds; every
//! built-in object passes Kubernetes' own schemas (kubernetes-validate, strict); the
//! ServiceMonitor and the ScaledObject pass their CRD schemas (vendored in k8s/schemas);
//! the ConfigMap is the file in config/ and passes `pinpipe check-config`; and the
//! operational relations hold (grace period, probes, ports, replica bounds). Tools come
//! from `.ci/install-servers.sh` (PyPI, in `$PINPIPE_OPS_BIN`).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const BIN: &str = env!("CARGO_BIN_EXE_pinpipe");
/// Partitions per topic each overlay is sized for (k8s/README.md): with the default range
/// assignor, a replica beyond this owns nothing, so it bounds maxReplicas.
fn partitions_per_topic(overlay: &str) -> u64 {
    match overlay {
        "local" => 3,
        "aws" => 12,
        other => panic!("no documented partitions per topic for overlay {other}"),
    }
}
/// The target lag per replica of the HPA and the ScaledObject.
const TARGET_LAG: &str = "50000";
/// The target Kinesis seconds behind per replica, and the shards the manifests are sized
/// for (4 per stream): the Kinesis signal is clamped at `KINESIS_SHARDS * 60` s.
const TARGET_KINESIS_SECONDS: &str = "60";
const KINESIS_SHARDS: u64 = 12;

fn ops_bin(name: &str) -> PathBuf {
    let dir = std::env::var_os("PINPIPE_OPS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/pinpipe-tools/ops-venv/bin")
        });
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "{} not found: run `bash .ci/install-servers.sh` first (or set PINPIPE_OPS_BIN)",
        p.display()
    );
    p
}

fn run(cmd: &mut Command, stdin: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `kubectl kustomize` of an overlay: the YAML and its documents as JSON values.
fn build(overlay: &str) -> (String, Vec<Value>) {
    let dir = Path::new(ROOT).join("k8s/overlays").join(overlay);
    let out = run(Command::new(ops_bin("kubectl")).arg("kustomize").arg(&dir), b"");
    assert!(out.status.success(), "kustomize {overlay}:\n{}", text(&out));
    let yaml = String::from_utf8(out.stdout).unwrap();
    let json = run(
        Command::new(ops_bin("python")).args([
            "-c",
            "import sys, yaml, json; json.dump(list(yaml.safe_load_all(sys.stdin)), sys.stdout)",
        ]),
        yaml.as_bytes(),
    );
    assert!(json.status.success(), "{}", text(&json));
    let docs: Vec<Value> = serde_json::from_slice(&json.stdout).unwrap();
    (yaml, docs)
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "expected one {kind}");
    found[0]
}

/// kubernetes-validate over a multi-document YAML file: `Ok` with its output when every
/// built-in object passes (CRD kinds only warn that it has no schema for them).
fn kubernetes_validate(yaml: &str) -> Result<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("all.yaml");
    std::fs::write(&f, yaml).unwrap();
    let out = run(
        Command::new(ops_bin("kubernetes-validate"))
            .args(["--strict", "-k", "1.35.0"])
            .arg(&f),
        b"",
    );
    let t = text(&out);
    if out.status.success() && !t.contains("ERROR") {
        Ok(t)
    } else {
        Err(t)
    }
}

fn check_crd(doc: &Value, schema: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("doc.json");
    std::fs::write(&f, serde_json::to_vec(doc).unwrap()).unwrap();
    let out = run(
        Command::new(ops_bin("check-jsonschema"))
            .arg("--schemafile")
            .arg(Path::new(ROOT).join("k8s/schemas").join(schema))
            .arg(&f),
        b"",
    );
    if out.status.success() {
        Ok(())
    } else {
        Err(text(&out))
    }
}

fn check_overlay(overlay: &str) {
    let (yaml, docs) = build(overlay);
    let kinds: BTreeSet<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    for k in [
        "Namespace",
        "ServiceAccount",
        "ConfigMap",
        "Deployment",
        "Service",
        "ServiceMonitor",
        "PodDisruptionBudget",
        "CronJob",
    ] {
        assert!(kinds.contains(k), "{overlay}: no {k} in {kinds:?}");
    }
    // Exactly one autoscaler: KEDA makes its own HPA.
    assert!(
        kinds.contains("HorizontalPodAutoscaler") != kinds.contains("ScaledObject"),
        "{overlay}: one of HPA and ScaledObject expected: {kinds:?}"
    );
    for d in &docs {
        if d["kind"] != "Namespace" {
            assert_eq!(
                d["metadata"]["namespace"], "pinpipe",
                "{overlay}: {}",
                d["metadata"]["name"]
            );
        }
    }

    // Built-in kinds: Kubernetes' schemas; CRDs: the vendored ones.
    let said = kubernetes_validate(&yaml).unwrap_or_else(|e| panic!("{overlay}: kubernetes-validate:\n{e}"));
    for line in said.lines().filter(|l| l.starts_with("WARN")) {
        assert!(
            line.contains("kind ServiceMonitor") || line.contains("kind ScaledObject"),
            "{overlay}: {line}"
        );
    }
    check_crd(one(&docs, "ServiceMonitor"), "servicemonitor_v1.json").unwrap_or_else(|e| panic!("{overlay}: {e}"));
    if kinds.contains("ScaledObject") {
        check_crd(one(&docs, "ScaledObject"), "scaledobject_v1alpha1.json")
            .unwrap_or_else(|e| panic!("{overlay}: {e}"));
    }

    // The ConfigMap is config/k8s/<overlay>/pinpipe.toml, and pinpipe accepts what is
    // deployed (the ConfigMap's content, written out as the pod would see it).
    let file = Path::new(ROOT).join("config/k8s").join(overlay).join("pinpipe.toml");
    let cm = one(&docs, "ConfigMap");
    let content = cm["data"]["pinpipe.toml"].as_str().unwrap();
    assert_eq!(
        content,
        std::fs::read_to_string(&file).unwrap(),
        "{overlay}: ConfigMap vs file"
    );
    let dir = tempfile::tempdir().unwrap();
    let deployed = dir.path().join("pinpipe.toml");
    std::fs::write(&deployed, content).unwrap();
    let mut check = Command::new(BIN);
    check.arg("--config").arg(&deployed).arg("check-config");
    // Only the file counts: no override from the environment of whoever runs the test.
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PINPIPE_") {
            check.env_remove(k);
        }
    }
    let out = check.output().unwrap();
    assert!(out.status.success(), "{overlay}: check-config:\n{}", text(&out));
    let cfg: toml::Value = toml::from_str(&String::from_utf8(out.stdout).unwrap()).unwrap();
    let grace_ms = cfg["kafka"]["shutdown_grace_ms"].as_integer().unwrap();
    let listen = cfg["metrics"]["listen"].as_str().unwrap();
    assert!(
        listen.starts_with("0.0.0.0:"),
        "{overlay}: probes need a pod-IP listener, got {listen}"
    );
    let port: u64 = listen.rsplit(':').next().unwrap().parse().unwrap();

    // The Deployment: config mounted from that ConfigMap, grace > preStop + pinpipe's grace,
    // probes on the metrics port.
    let dep = one(&docs, "Deployment");
    let pod = &dep["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let cm_name = cm["metadata"]["name"].as_str().unwrap();
    let volume = |pod: &Value| -> String {
        pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "config")
            .unwrap()["configMap"]["name"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(volume(pod), cm_name, "{overlay}: Deployment config volume");
    let env = |c: &Value, k: &str| -> Option<String> {
        c["env"].as_array()?.iter().find(|e| e["name"] == k)?["value"]
            .as_str()
            .map(String::from)
    };
    let mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "config")
        .unwrap();
    assert_eq!(
        env(c, "PINPIPE_CONFIG").unwrap(),
        format!("{}/pinpipe.toml", mount["mountPath"].as_str().unwrap())
    );
    let pre_stop = c["lifecycle"]["preStop"]["exec"]["command"].as_array().unwrap();
    assert_eq!(pre_stop[0], "sleep");
    let pre_stop_s: i64 = pre_stop[1].as_str().unwrap().parse().unwrap();
    let termination_s = pod["terminationGracePeriodSeconds"].as_i64().unwrap();
    assert!(
        termination_s * 1000 > grace_ms + pre_stop_s * 1000,
        "{overlay}: terminationGracePeriodSeconds {termination_s} must exceed preStop {pre_stop_s} s + \
         kafka.shutdown_grace_ms {grace_ms}"
    );
    let ports = c["ports"].as_array().unwrap();
    let metrics = ports.iter().find(|p| p["name"] == "metrics").unwrap();
    assert_eq!(
        metrics["containerPort"].as_u64().unwrap(),
        port,
        "{overlay}: container port vs metrics.listen"
    );
    // Non-root with a read-only root file system; /tmp is the writable scratch space.
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{overlay}");
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true, "{overlay}");
    let tmp = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == "/tmp")
        .unwrap_or_else(|| panic!("{overlay}: no /tmp mount"));
    let tmp_volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == tmp["name"])
        .unwrap();
    assert!(tmp_volume["emptyDir"].is_object(), "{overlay}: /tmp is not an emptyDir");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        assert_eq!(c[probe]["httpGet"]["port"], "metrics", "{overlay}: {probe}");
    }
    // The daily batch work: backfill, then maintain, then report, all on the same config.
    let crons: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "CronJob").collect();
    assert_eq!(crons.len(), 3, "{overlay}: CronJobs");
    assert!(
        crons.iter().any(|c| c["metadata"]["name"] == "pinpipe-backfill"),
        "{overlay}: no pinpipe-backfill"
    );

    // Tables in a folder (not s3://) must be on a PersistentVolumeClaim mounted in every pod
    // that writes or reads them, else each pod has its own tables (or none: the root file
    // system is read-only).
    let location = cfg["tables"]["location"].as_str().unwrap();
    if !location.contains("://") {
        let claims: BTreeSet<&str> = docs
            .iter()
            .filter(|d| d["kind"] == "PersistentVolumeClaim")
            .map(|d| d["metadata"]["name"].as_str().unwrap())
            .collect();
        let mut pods = vec![("Deployment".to_string(), pod)];
        for cron in &crons {
            pods.push((
                cron["metadata"]["name"].to_string(),
                &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"],
            ));
        }
        for (who, spec) in pods {
            let claim = spec["containers"][0]["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|m| Path::new(location).starts_with(m["mountPath"].as_str().unwrap()))
                .find_map(|m| {
                    spec["volumes"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|v| v["name"] == m["name"])?["persistentVolumeClaim"]["claimName"]
                        .as_str()
                })
                .unwrap_or_else(|| panic!("{overlay}: {who}: tables.location {location} is on no PVC mount"));
            assert!(claims.contains(claim), "{overlay}: {who}: no PVC {claim} in {claims:?}");
        }
    }
    let mut commands: Vec<(String, String)> = Vec::new();
    for cron in &crons {
        let spec = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"];
        assert_eq!(
            volume(spec),
            cm_name,
            "{overlay}: {} config volume",
            cron["metadata"]["name"]
        );
        assert_eq!(cron["spec"]["concurrencyPolicy"], "Forbid");
        let command = spec["containers"][0]["args"][0].as_str().unwrap().to_string();
        commands.push((cron["spec"]["schedule"].as_str().unwrap().to_string(), command));
    }
    commands.sort_by_key(|(schedule, _)| {
        let f: Vec<u32> = schedule.split(' ').take(2).map(|x| x.parse().unwrap()).collect();
        (f[1], f[0])
    });
    let order: Vec<&str> = commands.iter().map(|(_, c)| c.as_str()).collect();
    assert_eq!(order, ["batch", "maintain", "report"], "{overlay}: daily order");
    let svc = one(&docs, "Service");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "metrics");
    assert_eq!(one(&docs, "ServiceMonitor")["spec"]["endpoints"][0]["port"], "metrics");

    // Autoscaling on the lag metric, bounded by the partitions per topic.
    let replicas = dep["spec"]["replicas"].as_u64().unwrap();
    let (min, max, scale_down) = if kinds.contains("ScaledObject") {
        let so = one(&docs, "ScaledObject");
        let t = &so["spec"]["triggers"][0]["metadata"];
        assert!(
            t["query"].as_str().unwrap().contains("pinpipe_lag_records"),
            "{overlay}"
        );
        assert_eq!(t["threshold"], TARGET_LAG, "{overlay}");
        // The larger of the Kafka and the Kinesis signal: KEDA takes the maximum over its
        // triggers. The Kinesis total is clamped so it never asks for more replicas than
        // there are shards.
        let k = &so["spec"]["triggers"][1]["metadata"];
        assert_eq!(so["spec"]["triggers"].as_array().unwrap().len(), 2, "{overlay}");
        assert_eq!(k["threshold"], TARGET_KINESIS_SECONDS, "{overlay}");
        let clamp = KINESIS_SHARDS * TARGET_KINESIS_SECONDS.parse::<u64>().unwrap();
        assert_eq!(
            k["query"],
            format!("clamp_max(sum(pinpipe_kinesis_lag_seconds{{namespace=\"pinpipe\"}}), {clamp})"),
            "{overlay}"
        );
        assert_eq!(k["metricType"], "AverageValue", "{overlay}");
        assert_eq!(so["spec"]["scaleTargetRef"]["name"], dep["metadata"]["name"]);
        (
            so["spec"]["minReplicaCount"].as_u64().unwrap(),
            so["spec"]["maxReplicaCount"].as_u64().unwrap(),
            so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"].clone(),
        )
    } else {
        let hpa = one(&docs, "HorizontalPodAutoscaler");
        let m = &hpa["spec"]["metrics"][0]["external"];
        assert_eq!(m["metric"]["name"], "pinpipe_lag_records", "{overlay}");
        assert_eq!(m["target"]["averageValue"], TARGET_LAG, "{overlay}");
        // The HPA, too, takes the larger of its metrics' replica counts.
        assert_eq!(hpa["spec"]["metrics"].as_array().unwrap().len(), 2, "{overlay}");
        let k = &hpa["spec"]["metrics"][1]["external"];
        assert_eq!(k["metric"]["name"], "pinpipe_kinesis_lag_seconds", "{overlay}");
        assert_eq!(k["target"]["averageValue"], TARGET_KINESIS_SECONDS, "{overlay}");
        assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], dep["metadata"]["name"]);
        (
            hpa["spec"]["minReplicas"].as_u64().unwrap(),
            hpa["spec"]["maxReplicas"].as_u64().unwrap(),
            hpa["spec"]["behavior"]["scaleDown"].clone(),
        )
    };
    let partitions = partitions_per_topic(overlay);
    assert!(
        1 <= min && min <= replicas && replicas <= max && max <= partitions,
        "{overlay}: need 1 <= min {min} <= replicas {replicas} <= max {max} <= partitions per topic {partitions}"
    );
    // Every scale event is a group rebalance: scale down only after a quiet window.
    assert!(
        scale_down["stabilizationWindowSeconds"].as_u64().unwrap_or(0) >= 300,
        "{overlay}: scale-down stabilization: {scale_down}"
    );
}

#[test]
fn local_overlay_builds_and_validates() {
    check_overlay("local");
}

#[test]
fn aws_overlay_builds_and_validates() {
    check_overlay("aws");
}

/// The validators are not rubber stamps: each rejects a broken object.
#[test]
fn validators_reject_broken_objects() {
    let (yaml, docs) = build("local");
    let broken = yaml.replacen("replicas: 1\n", "replicas: two\n", 1);
    assert_ne!(broken, yaml);
    let e = kubernetes_validate(&broken).expect_err("a string replica count must fail");
    assert!(e.contains("deployment"), "{e}");
    let unknown = yaml.replacen("terminationGracePeriodSeconds:", "terminationGracePeriodSecond:", 1);
    kubernetes_validate(&unknown).expect_err("strict validation must reject an unknown field");

    let mut sm = one(&docs, "ServiceMonitor").clone();
    let endpoints = sm["spec"]["endpoints"].take();
    sm["spec"]["endpoint"] = endpoints;
    check_crd(&sm, "servicemonitor_v1.json").expect_err("a misspelled ServiceMonitor field must fail");
    let mut sm = one(&docs, "ServiceMonitor").clone();
    sm["spec"]["endpoints"][0]["interval"] = Value::from("15 seconds");
    check_crd(&sm, "servicemonitor_v1.json").expect_err("a malformed scrape interval must fail");
    let (_, aws) = build("aws");
    let mut so = one(&aws, "ScaledObject").clone();
    so["spec"]["maxReplicaCount"] = Value::from("twelve");
    check_crd(&so, "scaledobject_v1alpha1.json").expect_err("a string maxReplicaCount must fail");
}

/// The vendored CRD schemas are themselves valid JSON Schemas (k8s/schemas/README.md).
#[test]
fn vendored_schemas_are_valid_json_schemas() {
    let dir = Path::new(ROOT).join("k8s/schemas");
    let out = run(
        Command::new(ops_bin("check-jsonschema"))
            .arg("--check-metaschema")
            .arg(dir.join("servicemonitor_v1.json"))
            .arg(dir.join("scaledobject_v1alpha1.json")),
        b"",
    );
    assert!(out.status.success(), "{}", text(&out));
}

/// The Airflow DAG imports cleanly and declares backfill >> maintain >> report, daily, with
/// retries. apache-airflow is not installed (hundreds of packages); the DAG file is
/// executed against minimal stand-ins of the three Airflow names it imports, which record
/// what it builds.
#[test]
fn airflow_dag_imports_and_orders_the_daily_work() {
    let dag = Path::new(ROOT).join("airflow/dags/pinpipe_daily.py");
    let script = r#"
import json, runpy, sys, types

class DAG:
    def __init__(self, dag_id, **kw):
        self.dag_id, self.kw = dag_id, kw
        DAG.made = self
    def __enter__(self):
        return self
    def __exit__(self, *a):
        return False

class Variable:
    @staticmethod
    def get(key, default_var=None):
        return default_var

class KubernetesPodOperator:
    tasks = []
    def __init__(self, task_id, **kw):
        self.task_id, self.kw, self.downstream = task_id, kw, []
        KubernetesPodOperator.tasks.append(self)
    def __rshift__(self, other):
        self.downstream.append(other.task_id)
        return other

def module(name, **attrs):
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    sys.modules[name] = m

module("airflow", DAG=DAG)
module("airflow.models", Variable=Variable)
for p in ["airflow.providers", "airflow.providers.cncf", "airflow.providers.cncf.kubernetes",
          "airflow.providers.cncf.kubernetes.operators"]:
    module(p)
module("airflow.providers.cncf.kubernetes.operators.pod", KubernetesPodOperator=KubernetesPodOperator)
runpy.run_path(sys.argv[1], run_name="pinpipe_daily")
d = DAG.made
json.dump({
    "dag_id": d.dag_id,
    "schedule": d.kw.get("schedule"),
    "retries": d.kw["default_args"]["retries"],
    "tasks": [{"id": t.task_id, "args": t.kw["arguments"], "image": t.kw["image"],
               "next": t.downstream} for t in KubernetesPodOperator.tasks],
}, sys.stdout)
"#;
    let out = Command::new(ops_bin("python"))
        .arg("-c")
        .arg(script)
        .arg(&dag)
        .output()
        .unwrap();
    assert!(out.status.success(), "the DAG does not import:\n{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["dag_id"], "pinpipe_daily");
    assert!(v["retries"].as_u64().unwrap() >= 1, "{v}");
    let schedule = v["schedule"].as_str().unwrap();
    assert_eq!(schedule.split(' ').nth(2), Some("*"), "daily: {schedule}");
    let tasks = v["tasks"].as_array().unwrap();
    let ids: Vec<&str> = tasks.iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["backfill", "maintain", "report"]);
    assert_eq!(tasks[0]["args"][0], "batch");
    assert_eq!(tasks[0]["next"], serde_json::json!(["maintain"]));
    assert_eq!(tasks[1]["next"], serde_json::json!(["report"]));
    // The image the manifests deploy.
    let base = std::fs::read_to_string(Path::new(ROOT).join("k8s/base/kustomization.yaml")).unwrap();
    let image = tasks[0]["image"].as_str().unwrap();
    let (name, tag) = image.rsplit_once(':').unwrap();
    assert!(
        base.contains(&format!("newName: {name}")) && base.contains(&format!("newTag: {tag}")),
        "{image}"
    );
}
