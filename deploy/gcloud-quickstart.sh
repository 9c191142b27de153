#!/usr/bin/env bash
# Quick start on Google Cloud: what the DICOM pipelines need in a project, as gcloud and bq commands to read, then
# run. Each step can run alone (STEPS=healthcare,bigquery ...) and again: what exists is left as it is.
#
#   PROJECT=my-project LOCATION=europe-west4 DATASET=imaging STORE=pacs-archive \
#   SOURCE_BUCKET=my-dicom-incoming EXPORT_BUCKET=my-dicom-exports RESEARCH_BUCKET=my-dicom-research \
#   AIRFLOW_SA=dicom-pipelines@my-project.iam.gserviceaccount.com  bash deploy/gcloud-quickstart.sh
#
# Steps, in order:
#   apis        enable the Healthcare, BigQuery, Cloud Storage and Cloud Logging APIs
#   healthcare  the Healthcare dataset (in LOCATION: PHI stays there) and the DICOM store
#   bigquery    the BigQuery dataset for metadata and work tables, in the same region (it holds PatientName)
#   storage     the buckets, in the same region, uniform access
#   iam         the Healthcare service agent's grants (it reads and writes the buckets and BigQuery for the
#               import and export operations) and the Airflow identity's (AIRFLOW_SA: what the DAGs act as,
#               DICOM_IMPERSONATION_CHAIN or the connection's account)
#   arrivals    imports as files arrive (dicom_arrival_import): a Pub/Sub topic, the source bucket's notification
#               of finalized objects under SOURCE_PREFIX (default incoming/) to it, attributes only (no object
#               metadata in the messages), a pull subscription for Airflow, and the grants: Cloud Storage's service
#               agent publishes, AIRFLOW_SA subscribes. Needs SOURCE_BUCKET.
# Then set the deployment's settings (README, "Settings") to the same names.
set -euo pipefail

: "${PROJECT:?set PROJECT, the Google Cloud project}"
: "${LOCATION:?set LOCATION, the region of the Healthcare dataset (e.g. europe-west4)}"
: "${DATASET:?set DATASET, the Healthcare dataset id}"
: "${STORE:?set STORE, the DICOM store id}"
BQ_DATASET=${BQ_DATASET:-dicom_metadata}
STEPS=${STEPS:-apis,healthcare,bigquery,storage,iam,arrivals}
TOPIC=${TOPIC:-dicom-arrivals}
SUBSCRIPTION=${SUBSCRIPTION:-dicom-arrivals-airflow}
SOURCE_PREFIX=${SOURCE_PREFIX:-incoming/}
# Extra bq flags (the tests point bq at the local stack with --api and --discovery_file).
read -r -a BQ_FLAGS <<< "${BQ_FLAGS:-}"

case "${LOCATION,,}" in
  us | eu) BQ_LOCATION=${LOCATION^^} ;;
  *) BQ_LOCATION=${LOCATION,,} ;;
esac

wants() { [[ ",$STEPS," == *",$1,"* ]]; }
say() { printf '== %s\n' "$*"; }

if wants apis; then
  say "enabling the APIs in $PROJECT"
  gcloud services enable healthcare.googleapis.com bigquery.googleapis.com storage.googleapis.com \
    logging.googleapis.com pubsub.googleapis.com --project="$PROJECT"
fi

if wants healthcare; then
  if gcloud healthcare datasets describe "$DATASET" --location="$LOCATION" --project="$PROJECT" >/dev/null 2>&1; then
    say "Healthcare dataset $DATASET exists in $LOCATION"
  else
    say "creating the Healthcare dataset $DATASET in $LOCATION"
    gcloud healthcare datasets create "$DATASET" --location="$LOCATION" --project="$PROJECT"
  fi
  if gcloud healthcare dicom-stores describe "$STORE" --dataset="$DATASET" --location="$LOCATION" \
      --project="$PROJECT" >/dev/null 2>&1; then
    say "DICOM store $STORE exists"
  else
    say "creating the DICOM store $STORE"
    gcloud healthcare dicom-stores create "$STORE" --dataset="$DATASET" --location="$LOCATION" --project="$PROJECT"
  fi
fi

if wants bigquery; then
  if bq "${BQ_FLAGS[@]}" --project_id="$PROJECT" show --format=none "$PROJECT:$BQ_DATASET" >/dev/null 2>&1; then
    found=$(bq "${BQ_FLAGS[@]}" --project_id="$PROJECT" show --format=json "$PROJECT:$BQ_DATASET" \
      | python3 -c 'import json, sys; print(json.load(sys.stdin).get("location", "US"))')
    if [[ "${found,,}" != "${BQ_LOCATION,,}" ]]; then
      echo "BigQuery dataset $PROJECT:$BQ_DATASET is in $found, not $BQ_LOCATION: it would hold PHI outside" \
        "the Healthcare dataset's region. Choose another BQ_DATASET." >&2
      exit 1
    fi
    say "BigQuery dataset $BQ_DATASET exists in $found"
  else
    say "creating the BigQuery dataset $BQ_DATASET in $BQ_LOCATION"
    bq "${BQ_FLAGS[@]}" --project_id="$PROJECT" --location="$BQ_LOCATION" mk --dataset \
      --description="DICOM metadata and work tables of the DICOM pipelines (PatientName, PatientID)" \
      "$PROJECT:$BQ_DATASET"
  fi
fi

if wants storage; then
  for bucket in ${SOURCE_BUCKET:-} ${EXPORT_BUCKET:-} ${RESEARCH_BUCKET:-}; do
    if gcloud storage buckets describe "gs://$bucket" --project="$PROJECT" >/dev/null 2>&1; then
      say "bucket gs://$bucket exists"
    else
      say "creating gs://$bucket in $LOCATION"
      gcloud storage buckets create "gs://$bucket" --project="$PROJECT" --location="$LOCATION" \
        --uniform-bucket-level-access --public-access-prevention
    fi
  done
fi

if wants iam; then
  : "${AIRFLOW_SA:?set AIRFLOW_SA, the service account the DAGs act as}"
  number=$(gcloud projects describe "$PROJECT" --format='value(projectNumber)')
  agent="serviceAccount:service-$number@gcp-sa-healthcare.iam.gserviceaccount.com"
  airflow="serviceAccount:$AIRFLOW_SA"
  say "Healthcare service agent: read the source bucket, write the export buckets, BigQuery for the metadata"
  [[ -n "${SOURCE_BUCKET:-}" ]] && gcloud storage buckets add-iam-policy-binding "gs://$SOURCE_BUCKET" \
    --member="$agent" --role=roles/storage.objectViewer >/dev/null
  for bucket in ${EXPORT_BUCKET:-} ${RESEARCH_BUCKET:-}; do
    gcloud storage buckets add-iam-policy-binding "gs://$bucket" --member="$agent" \
      --role=roles/storage.objectAdmin >/dev/null  # exports overwrite objects: objectCreator is not enough
  done
  for role in roles/bigquery.dataEditor roles/bigquery.jobUser; do
    gcloud projects add-iam-policy-binding "$PROJECT" --member="$agent" --role="$role" --condition=None >/dev/null
  done
  say "Airflow identity $AIRFLOW_SA: the store, the failed-file logs, BigQuery, the buckets"
  gcloud healthcare datasets add-iam-policy-binding "$DATASET" --location="$LOCATION" --project="$PROJECT" \
    --member="$airflow" --role=roles/healthcare.dicomStoreAdmin >/dev/null
  for role in roles/logging.viewer roles/bigquery.jobUser; do
    gcloud projects add-iam-policy-binding "$PROJECT" --member="$airflow" --role="$role" --condition=None >/dev/null
  done
  bq "${BQ_FLAGS[@]}" --project_id="$PROJECT" add-iam-policy-binding --dataset --member="$airflow" \
    --role=roles/bigquery.dataEditor "$PROJECT:$BQ_DATASET" >/dev/null
  for bucket in ${SOURCE_BUCKET:-} ${EXPORT_BUCKET:-} ${RESEARCH_BUCKET:-}; do
    gcloud storage buckets add-iam-policy-binding "gs://$bucket" --member="$airflow" \
      --role=roles/storage.objectAdmin >/dev/null  # failure reports, quarantine, filter files, export checks
  done
fi

if wants arrivals && [[ -n "${SOURCE_BUCKET:-}" ]]; then
  if gcloud pubsub topics describe "$TOPIC" --project="$PROJECT" >/dev/null 2>&1; then
    say "Pub/Sub topic $TOPIC exists"
  else
    say "creating the Pub/Sub topic $TOPIC (messages stored in $LOCATION only)"
    gcloud pubsub topics create "$TOPIC" --project="$PROJECT" --message-storage-policy-allowed-regions="$LOCATION"
  fi
  storage_agent=$(gcloud storage service-agent --project="$PROJECT")
  gcloud pubsub topics add-iam-policy-binding "$TOPIC" --project="$PROJECT" \
    --member="serviceAccount:$storage_agent" --role=roles/pubsub.publisher >/dev/null
  if gcloud storage buckets notifications list "gs://$SOURCE_BUCKET" --format="value(topic)" 2>/dev/null \
      | grep -q "/topics/$TOPIC\$"; then
    say "gs://$SOURCE_BUCKET already notifies $TOPIC"
  else
    say "gs://$SOURCE_BUCKET: notify $TOPIC of each finalized object under $SOURCE_PREFIX"
    gcloud storage buckets notifications create "gs://$SOURCE_BUCKET" --topic="projects/$PROJECT/topics/$TOPIC" \
      --event-types=OBJECT_FINALIZE --object-prefix="$SOURCE_PREFIX" --payload-format=none
  fi
  if gcloud pubsub subscriptions describe "$SUBSCRIPTION" --project="$PROJECT" >/dev/null 2>&1; then
    say "Pub/Sub subscription $SUBSCRIPTION exists"
  else
    say "creating the pull subscription $SUBSCRIPTION (kept 7 days: a paused DAG or a stopped triggerer loses nothing)"
    gcloud pubsub subscriptions create "$SUBSCRIPTION" --project="$PROJECT" --topic="$TOPIC" \
      --ack-deadline=600 --message-retention-duration=7d
  fi
  if [[ -n "${AIRFLOW_SA:-}" ]]; then
    gcloud pubsub subscriptions add-iam-policy-binding "$SUBSCRIPTION" --project="$PROJECT" \
      --member="serviceAccount:$AIRFLOW_SA" --role=roles/pubsub.subscriber >/dev/null
  fi
fi

say "done. Settings for the deployment:"
cat <<EOF
GCP_PROJECT=$PROJECT
HEALTHCARE_LOCATION=$LOCATION
HEALTHCARE_DATASET=$DATASET
DICOM_STORE=$STORE
BIGQUERY_DATASET=$BQ_DATASET
SOURCE_BUCKET=${SOURCE_BUCKET:-}
EXPORT_BUCKET=${EXPORT_BUCKET:-}
RESEARCH_BUCKET=${RESEARCH_BUCKET:-}
DICOM_IMPERSONATION_CHAIN=${AIRFLOW_SA:-}
DICOM_ARRIVAL_SUBSCRIPTION=$( [[ -n "${SOURCE_BUCKET:-}" ]] && echo "projects/$PROJECT/subscriptions/$SUBSCRIPTION" )
EOF
