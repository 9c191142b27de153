-- Resource paths for filterConfig.resourcePathsGcsUri, one per line, at the chosen granularity.
-- Criteria arrive only as query parameters (@modalities, @study_date_from, ...); an empty string
-- means "no restriction". The granularity and table come from validated params (enum / pattern). The
-- table is the one the store streams to (params.metadata_table), or the store's own metadata table.
SELECT DISTINCT
  CONCAT('/studies/', StudyInstanceUID
  {%- if params.granularity in ('series', 'instance') %}, '/series/', SeriesInstanceUID{% endif %}
  {%- if params.granularity == 'instance' %}, '/instances/', SOPInstanceUID{% endif %}) AS resource_path
FROM `{{ params.metadata_table[5:] if params.get('metadata_table') else params.project_id ~ '.' ~ params.bigquery_dataset ~ '.' ~ store_metadata_table(params) }}`
WHERE StudyInstanceUID IS NOT NULL
  AND (@modalities = '' OR Modality IN UNNEST(SPLIT(@modalities, ',')))
  AND (@study_date_from = '' OR StudyDate >= SAFE_CAST(@study_date_from AS DATE))
  AND (@study_date_to = '' OR StudyDate <= SAFE_CAST(@study_date_to AS DATE))
  AND (@patient_ids = '' OR PatientID IN UNNEST(SPLIT(@patient_ids, ',')))
  AND (@study_uids = '' OR StudyInstanceUID IN UNNEST(SPLIT(@study_uids, ',')))
ORDER BY resource_path
