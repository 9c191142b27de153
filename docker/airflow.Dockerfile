# The Airflow image of docker-compose.yaml, and the image to give the official Helm chart: the official image, the
# runtime requirements (no test or lint tool), and the package built from this checkout. The DAG files are baked in
# too (compose mounts ./dags over them for development; the Helm chart can use them or git-sync).
FROM apache/airflow:3.3.2-python3.11
COPY --chown=airflow:0 requirements.txt constraints.txt /opt/airflow/project/
RUN pip install --no-cache-dir -r /opt/airflow/project/requirements.txt -c /opt/airflow/project/constraints.txt
COPY --chown=airflow:0 pyproject.toml README.md LICENSE /opt/airflow/project/
COPY --chown=airflow:0 plugins/dicom_pipelines /opt/airflow/project/plugins/dicom_pipelines
RUN pip install --no-cache-dir --no-deps /opt/airflow/project
COPY --chown=airflow:0 docker/check_secrets.py /opt/airflow/check_secrets.py
COPY --chown=airflow:0 dags /opt/airflow/dags
