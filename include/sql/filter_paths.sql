-- Resource paths for filterConfig.resourcePathsGcsUri, one per line, at the chosen granularity.
-- Criteria arrive only as query parameters (@modalities, @study_date_from, ...). The template sees whether
-- a criterion is given, never its value, and names only the columns of the criteria given: BigQuery bills
-- the columns a query reads. Each date bound compares StudyDate alone with a constant, so BigQuery prunes
-- the partitions of a table partitioned on StudyDate. The granularity and table come from validated params
-- (enum / pattern). The table is the one the store streams to (params.metadata_table), or the store's own
-- metadata table.
SELECT DISTINCT
  CONCAT('/studies/', StudyInstanceUID
  {%- if params.granularity in ('series', 'instance') %}, '/series/', SeriesInstanceUID{% endif %}
  {%- if params.granularity == 'instance' %}, '/instances/', SOPInstanceUID{% endif %}) AS resource_path
FROM `{{ params.metadata_table[5:] if params.get('metadata_table') else params.project_id ~ '.' ~ params.bigquery_dataset ~ '.' ~ store_metadata_table(params) }}`
WHERE StudyInstanceUID IS NOT NULL
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
