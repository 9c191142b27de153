# The Airflow image of docker-compose.yaml: the official image plus this project's pinned requirements, built
# once (`docker compose build`), not pip-installed at every start (_PIP_ADDITIONAL_REQUIREMENTS is for quick checks
# only, as Airflow's own docs say).
FROM apache/airflow:3.3.2-python3.11
COPY --chown=airflow:0 requirements.txt constraints.txt /opt/airflow/project/
RUN pip install --no-cache-dir -r /opt/airflow/project/requirements.txt -c /opt/airflow/project/constraints.txt
COPY --chown=airflow:0 dags /opt/airflow/dags
COPY --chown=airflow:0 plugins /opt/airflow/plugins
COPY --chown=airflow:0 include /opt/airflow/include
ENV PYTHONPATH=/opt/airflow/plugins
