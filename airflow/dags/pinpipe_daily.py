"""pinpipe's daily batch work for teams on Airflow / Amazon MWAA (the seed's scheduler).

Runs the pinpipe image in the cluster, like the CronJobs in k8s/base do without Airflow:
backfill the raw archive into the tables, then maintain them (compaction, vacuum,
checkpoints), then answer the analytics questions. Each step retries; a step runs only
after the previous one succeeded.

Airflow Variables (all optional): pinpipe_image, pinpipe_namespace, pinpipe_tables
(s3://bucket/tables), pinpipe_raw (s3://bucket/raw), pinpipe_region. Credentials come
from the pod's service account (IRSA), never from Airflow.
"""
from datetime import datetime, timedelta

from airflow import DAG
from airflow.models import Variable
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

IMAGE = Variable.get("pinpipe_image", default_var="ghcr.io/example/pinpipe:0.1.0")
NAMESPACE = Variable.get("pinpipe_namespace", default_var="pinpipe")
ENV = {
    "PINPIPE__TABLES__LOCATION": Variable.get("pinpipe_tables", default_var="s3://my-pinpipe-bucket/tables"),
    "PINPIPE__TABLES__REGION": Variable.get("pinpipe_region", default_var="us-east-1"),
    "PINPIPE__BATCH__INPUT": Variable.get("pinpipe_raw", default_var="s3://my-pinpipe-bucket/raw"),
    "PINPIPE_LOG": "info,buoyant_kernel::snapshot::builder=off,deltalake_core::writer::stats=error",
}

default_args = {
    "owner": "data-platform",
    "retries": 3,
    "retry_delay": timedelta(minutes=10),
    "retry_exponential_backoff": True,
    "execution_timeout": timedelta(hours=4),
}


def pinpipe_task(task_id, arguments, cpu="1", memory="1Gi"):
    return KubernetesPodOperator(
        task_id=task_id,
        name=f"pinpipe-{task_id}",
        namespace=NAMESPACE,
        image=IMAGE,
        arguments=arguments,
        env_vars=ENV,
        service_account_name="pinpipe",
        container_resources={"requests": {"cpu": cpu, "memory": memory}, "limits": {"memory": "2Gi"}},
        get_logs=True,
        on_finish_action="delete_succeeded_pod",
    )


with DAG(
    dag_id="pinpipe_daily",
    description="Backfill, maintain and report the pinpipe Delta tables",
    schedule="15 2 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=default_args,
    tags=["pinpipe", "delta"],
) as dag:
    backfill = pinpipe_task("backfill", ["batch", "--no-progress"], cpu="2")
    maintain = pinpipe_task("maintain", ["maintain"])
    report = pinpipe_task("report", ["report"])
    backfill >> maintain >> report
