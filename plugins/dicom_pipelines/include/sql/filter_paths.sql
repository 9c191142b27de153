-- Resource paths for filterConfig.resourcePathsGcsUri, one per line, at the chosen granularity.
-- Criteria arrive only as query parameters (@modalities, @study_date_from, ...). The template sees whether
-- a criterion is given, never its value, and names only the columns of the criteria given: BigQuery bills
-- the columns a query reads. The granularity and table come from validated params (enum / pattern).
-- The table is either the one the store streams to (params.metadata_table), or the store's own metadata table.
-- A streamed table is a change log, not a snapshot: the Healthcare API appends a row each time an instance is
-- stored, deleted or changes storage class, and never removes one (StreamConfig, "Instance deletions are not
-- applied to the destination table"). Its LastUpdated and Type columns say when and how. An instance is in the
-- store now when its latest row is not a DELETE, and only those instances are selected.
{%- set criteria = (['Modality'] if params.get('modalities') else [])
  + (['StudyDate'] if params.get('study_date_from') or params.get('study_date_to') else [])
  + (['PatientID'] if params.get('patient_ids') else []) %}
SELECT DISTINCT
  CONCAT('/studies/', StudyInstanceUID
  {%- if params.granularity in ('series', 'instance') %}, '/series/', SeriesInstanceUID{% endif %}
  {%- if params.granularity == 'instance' %}, '/instances/', SOPInstanceUID{% endif %}) AS resource_path
{%- if params.get('metadata_table') %}
FROM (
  SELECT StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID, Type{% for column in criteria %}, {{ column }}{% endfor %},
    ROW_NUMBER() OVER (
      PARTITION BY StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID ORDER BY LastUpdated DESC
    ) AS change_rank
  FROM `{{ params.metadata_table[5:] }}`
)
WHERE change_rank = 1
  AND IFNULL(Type, '') != 'DELETE'
  AND StudyInstanceUID IS NOT NULL
{%- else %}
FROM `{{ params.project_id ~ '.' ~ params.bigquery_dataset ~ '.' ~ store_metadata_table(params) }}`
WHERE StudyInstanceUID IS NOT NULL
{%- endif %}
{%- if params.get('modalities') %}
  AND Modality IN UNNEST(SPLIT(@modalities, ','))
{%- endif %}
{%- if params.get('study_date_from') %}
  AND StudyDate >= CAST(@study_date_from AS DATE)
{%- endif %}
{%- if params.get('study_date_to') %}
  AND StudyDate <= CAST(@study_date_to AS DATE)
{%- endif %}
{%- if params.get('patient_ids') %}
  AND PatientID IN UNNEST(SPLIT(@patient_ids, ','))
{%- endif %}
{%- if params.get('study_uids') %}
  AND StudyInstanceUID IN UNNEST(SPLIT(@study_uids, ','))
{%- endif %}
ORDER BY resource_path
