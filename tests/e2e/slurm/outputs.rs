//! A script task's declared outputs: moved by the host from the cluster to
//! a real S3-compatible server (moto) or to the pod's file system, or
//! uploaded by the job and checked; a missing one and one over the limit
//! fail the task with the Python connector's words; two replicas polling
//! one finished job both answer its outputs; nothing outside the task's
//! output prefix is reachable.

use flyte_connect::proto::{
    connector::{GetTaskRequest, Resource},
    core::{BlobType, Literal, blob_type::BlobDimensionality, literal, scalar},
};
use flyte_connect_e2e::{hosted::HostedConnector, s3::S3Server};

use super::*;

/// GetTask of `meta` with the task's output prefix, as Flyte's executor
/// sends it.
async fn get(
    slurm: &HostedConnector,
    cluster: &Cluster,
    meta: &[u8],
    prefix: &str,
) -> Result<Resource, tonic::Status> {
    let answer = slurm
        .server
        .tasks()
        .await
        .get_task(GetTaskRequest {
            task_category: literals::category("slurm_script"),
            resource_meta: meta.to_vec(),
            output_prefix: prefix.to_owned(),
            connection: Some(keys(cluster)),
        })
        .await?;
    Ok(answer.into_inner().resource.unwrap_or_default())
}

/// Polls until the task ends; its last resource and every message seen.
async fn finish(
    slurm: &HostedConnector,
    cluster: &Cluster,
    meta: &[u8],
    prefix: &str,
) -> (Resource, Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = Vec::new();
    loop {
        let resource = get(slurm, cluster, meta, prefix).await.expect("GetTask");
        seen.push(resource.message.clone());
        if matches!(
            resource.phase(),
            Phase::Succeeded | Phase::Failed | Phase::Aborted
        ) {
            return (resource, seen);
        }
        assert!(
            Instant::now() < deadline,
            "still {:?}: {}",
            resource.phase(),
            resource.message
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A script task writing `script`, declaring `outputs`, under `prefix`.
fn with_outputs(
    cluster: &Cluster,
    name: &str,
    script: &str,
    outputs: Value,
    upload: &str,
    prefix: &str,
) -> CreateTaskRequest {
    let mut request = task(
        cluster,
        "slurm_script",
        name,
        custom(
            cluster,
            json!({"script": script, "outputs": outputs, "output_upload": upload}),
        ),
        &TypedInputs(vec![]),
    );
    request.output_prefix = prefix.to_owned();
    request
}

/// The blob URIs and dimensionalities of a resource's outputs, by name.
fn blobs(resource: &Resource) -> Vec<(String, String, BlobDimensionality)> {
    resource
        .outputs
        .as_ref()
        .map(|outputs| {
            outputs
                .literals
                .iter()
                .filter_map(|named| {
                    let Some(Literal {
                        value: Some(literal::Value::Scalar(scalar)),
                        ..
                    }) = &named.value
                    else {
                        return None;
                    };
                    let Some(scalar::Value::Blob(blob)) = &scalar.value else {
                        return None;
                    };
                    let dimensionality = blob
                        .metadata
                        .as_ref()
                        .and_then(|m| m.r#type.as_ref())
                        .map_or(BlobDimensionality::Single, BlobType::dimensionality);
                    Some((named.name.clone(), blob.uri.clone(), dimensionality))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn storage_manifest(s3: &S3Server) -> String {
    format!(
        "[storage]\ns3_endpoint = \"{}\"\ns3_region = \"us-east-1\"\n",
        s3.endpoint
    )
}

const TWELVE_MIB: usize = 12 << 20;

/// Transfers of `event` the server counted, over its connectors.
fn transfers(slurm: &HostedConnector, event: &str) -> f64 {
    slurm
        .server
        .metrics_text()
        .lines()
        .filter(|line| line.starts_with("flyte_connector_storage_transfers_total{"))
        .filter(|line| line.contains(&format!("event=\"{event}\"")))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connector_moves_a_finished_jobs_outputs_to_s3() {
    let _shared = CONTROLLER.read().await;
    let cluster = cluster();
    let s3 = S3Server::start("flyte-outputs");
    let env = s3.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let slurm = serve_with(cluster, &storage_manifest(&s3), &env);
    let prefix = "s3://flyte-outputs/run-1/a0";
    let script = format!(
        "echo trained > \"$FLYTE_OUTPUT_MODEL\"\nmkdir -p \"$FLYTE_OUTPUT_SHARDS/part\"\n\
         head -c {TWELVE_MIB} /dev/urandom > \"$FLYTE_OUTPUT_SHARDS/big.bin\"\n\
         echo one > \"$FLYTE_OUTPUT_SHARDS/part/one.txt\"\n"
    );
    let request = with_outputs(
        cluster,
        "train",
        &script,
        json!({"model": "file", "shards": "directory"}),
        "connector",
        prefix,
    );
    let meta = slurm.create(request).await.expect("CreateTask");
    let parsed = meta_json(&meta);
    let written_to = parsed["declared_outputs"]["shards"]["written_to"]
        .as_str()
        .expect("written_to")
        .to_owned();
    assert_eq!(
        parsed["declared_outputs"]["model"],
        json!({"uri": format!("{prefix}/model"), "kind": "file", "upload": "connector",
               "written_to": written_to.replace("/shards", "/model")})
    );

    let (done, seen) = finish(&slurm, cluster, &meta, prefix).await;
    assert_eq!(done.phase(), Phase::Succeeded, "{}", done.message);
    assert!(
        seen.iter().any(|m| m.ends_with(
            "\nJob finished; the connector is moving its declared outputs (model, shards) to \
             object storage."
        )),
        "{seen:?}"
    );
    assert_eq!(
        blobs(&done),
        [
            (
                "model".to_owned(),
                format!("{prefix}/model"),
                BlobDimensionality::Single
            ),
            (
                "shards".to_owned(),
                format!("{prefix}/shards"),
                BlobDimensionality::Multipart
            ),
        ]
    );
    assert_eq!(
        s3.get("run-1/a0/model").as_deref(),
        Some(b"trained\n".as_slice())
    );
    let mut keys = s3.keys("run-1/a0/shards/");
    keys.sort();
    assert_eq!(
        keys,
        ["run-1/a0/shards/big.bin", "run-1/a0/shards/part/one.txt"]
    );
    let big = s3.get("run-1/a0/shards/big.bin").expect("the big file");
    let on_cluster = std::fs::read(format!("{written_to}/big.bin")).expect("the job's file");
    assert_eq!(big.len(), TWELVE_MIB);
    assert!(
        big == on_cluster,
        "the object is the job's file, byte for byte"
    );
    assert_eq!(transfers(&slurm, "started"), 2.0, "one transfer per output");
    assert_eq!(transfers(&slurm, "done"), 2.0);
    slurm.assert_never_logged(&[cluster.private_key.lines().nth(2).expect("a key line")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_the_job_uploads_are_checked_and_a_missing_one_fails_naming_it() {
    let _shared = CONTROLLER.read().await;
    let cluster = cluster();
    let store = cluster.scratch("store");
    let slurm = serve_with(
        cluster,
        &format!("[storage]\nlocal_roots = [\"{store}\"]\n"),
        &[],
    );
    let prefix = format!("file://{store}/run-2/a0");
    let writes_model = "f=\"${FLYTE_OUTPUT_MODEL#file://}\"\nmkdir -p \"$(dirname \"$f\")\"\n\
                        echo m > \"$f\"\n";
    let outputs = json!({"model": "file", "report": "file"});

    let request = with_outputs(
        cluster,
        "partial",
        writes_model,
        outputs.clone(),
        "job",
        &prefix,
    );
    let meta = slurm.create(request).await.expect("CreateTask");
    let (done, _) = finish(&slurm, cluster, &meta, &prefix).await;
    assert_eq!(done.phase(), Phase::Failed, "{}", done.message);
    let job_id = field(&meta_json(&meta), "job_id").to_owned();
    assert!(
        done.message.contains(&format!(
            "\nSlurm job {job_id} succeeded but did not write every declared output: report at \
             {prefix}/report. The script is given each destination as FLYTE_OUTPUT_<NAME> and \
             must write there."
        )),
        "{}",
        done.message
    );

    let writes_both =
        format!("{writes_model}r=\"${{FLYTE_OUTPUT_REPORT#file://}}\"\necho r > \"$r\"\n");
    let request = with_outputs(cluster, "whole", &writes_both, outputs, "job", &prefix);
    let meta = slurm.create(request).await.expect("CreateTask");
    let (done, _) = finish(&slurm, cluster, &meta, &prefix).await;
    assert_eq!(done.phase(), Phase::Succeeded, "{}", done.message);
    assert_eq!(
        blobs(&done),
        [
            (
                "model".to_owned(),
                format!("{prefix}/model"),
                BlobDimensionality::Single
            ),
            (
                "report".to_owned(),
                format!("{prefix}/report"),
                BlobDimensionality::Single
            ),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_over_the_limit_fails_and_nothing_outside_the_prefix_is_reached() {
    let _shared = CONTROLLER.read().await;
    let cluster = cluster();
    let store = cluster.scratch("limited");
    let manifest = format!(
        "[storage]\nlocal_roots = [\"{store}\"]\n\
         [env]\nFLYTE_SLURM_CONNECTOR_UPLOAD_MAX_BYTES = \"1kB\"\n"
    );
    let slurm = serve_with(cluster, &manifest, &[]);
    let prefix = format!("file://{store}/run-3/a0");
    let request = with_outputs(
        cluster,
        "big",
        "head -c 5000 /dev/zero > \"$FLYTE_OUTPUT_MODEL\"\n",
        json!({"model": "file"}),
        "connector",
        &prefix,
    );
    let meta = slurm.create(request).await.expect("CreateTask");

    // Polls carrying another task's prefix answer the job's phase while it
    // runs, and reach nothing once it is done.
    let elsewhere = format!("file://{store}/elsewhere");
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        match get(&slurm, cluster, &meta, &elsewhere).await {
            Ok(resource) => assert!(
                matches!(resource.phase(), Phase::Queued | Phase::Running),
                "{}",
                resource.message
            ),
            Err(status) => break status,
        }
        assert!(Instant::now() < deadline, "the job did not finish");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(
        status.message().contains(&format!(
            "{prefix}/model is not under the task's output prefix"
        )),
        "{status:?}"
    );

    let (done, _) = finish(&slurm, cluster, &meta, &prefix).await;
    assert_eq!(done.phase(), Phase::Failed, "{}", done.message);
    let job_id = field(&meta_json(&meta), "job_id").to_owned();
    assert!(
        done.message.contains(&format!(
            "\nOutput 'model' of Slurm job {job_id} is 0 MB, above the 0 MB the connector will \
             move on a job's behalf. Set output_upload='job'"
        )),
        "{}",
        done.message
    );
    assert!(
        !std::path::Path::new(&format!("{store}/run-3/a0/model")).exists(),
        "nothing was moved"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_polling_one_finished_job_both_answer_its_outputs() {
    let _shared = CONTROLLER.read().await;
    let cluster = cluster();
    let s3 = S3Server::start("flyte-replicas");
    let env = s3.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let replicas = [
        serve_with(cluster, &storage_manifest(&s3), &env),
        serve_with(cluster, &storage_manifest(&s3), &env),
    ];
    let prefix = "s3://flyte-replicas/run-4/a0";
    let request = with_outputs(
        cluster,
        "shared",
        &format!("head -c {TWELVE_MIB} /dev/urandom > \"$FLYTE_OUTPUT_MODEL\"\n"),
        json!({"model": "file"}),
        "connector",
        prefix,
    );
    let meta = replicas[0].create(request).await.expect("CreateTask");
    // Round robin, as a Service spreads the executor's polls.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut succeeded = [false, false];
    let mut turn = 0;
    while !(succeeded[0] && succeeded[1]) {
        let resource = get(&replicas[turn], cluster, &meta, prefix)
            .await
            .expect("GetTask");
        match resource.phase() {
            Phase::Succeeded => {
                assert_eq!(
                    blobs(&resource),
                    [(
                        "model".to_owned(),
                        format!("{prefix}/model"),
                        BlobDimensionality::Single
                    )]
                );
                succeeded[turn] = true;
            }
            Phase::Queued | Phase::Running => {}
            other => panic!("{other:?}: {}", resource.message),
        }
        assert!(
            Instant::now() < deadline,
            "not both succeeded: {succeeded:?}"
        );
        turn = 1 - turn;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let object = s3.get("run-4/a0/model").expect("the output");
    assert_eq!(object.len(), TWELVE_MIB, "complete");
    for replica in &replicas {
        assert!(
            transfers(replica, "started") <= 1.0,
            "a replica moves an output at most once"
        );
    }
}
