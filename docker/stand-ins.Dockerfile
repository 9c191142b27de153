# The local Google stand-ins (BigQuery, Cloud Logging, Healthcare API) of docker-compose.yaml, built once. They
# share no code with plugins/ and need none of Airflow: only their own requirements, pinned by constraints.txt.
FROM python:3.11-slim
WORKDIR /app
COPY emulator/requirements.txt constraints.txt /app/
RUN pip install --no-cache-dir -r requirements.txt -c constraints.txt
COPY emulator /app/emulator
ENV PYTHONUNBUFFERED=1
