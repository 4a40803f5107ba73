/** Audit: query the trail (GET /audit, authorized as p11kms:ReadAuditTrail) and show whether the
 *  chains verify (GET /audit/verification). Each record is CloudTrail's JSON. */
import { useState } from 'preact/hooks';
import { operatorGet } from '../api';
import { ErrorBanner, Field, useAsync } from '../components';

interface AuditRecord {
  eventTime: string;
  eventName: string;
  eventID: string;
  errorCode?: string;
  userIdentity?: { arn?: string; accessKeyId?: string; type?: string };
  resources?: { ARN: string }[];
}

interface Verification {
  state: 'intact' | 'unanchored tail' | 'broken';
  verifiedAt: string;
  chains: number;
  records: number;
  digests: number;
  findings: string[];
  notes: string[];
}

export function AuditPage() {
  const [form, setForm] = useState({ from: '', to: '', key: '', principal: '', eventName: '', errorCode: '' });
  const [query, setQuery] = useState(form);
  const [open, setOpen] = useState<string>();
  const records = useAsync(
    () =>
      operatorGet<{ records: AuditRecord[] }>('/audit', {
        ...query,
        from: query.from ? new Date(query.from).toISOString() : undefined,
        to: query.to ? new Date(query.to).toISOString() : undefined,
        limit: '200',
      }),
    [query],
  );
  const verification = useAsync(() => operatorGet<Verification>('/audit/verification'), []);
  const input = (id: keyof typeof form, label: string, type = 'text') => (
    <Field id={`audit-${id}`} label={label}>
      <input id={`audit-${id}`} type={type} value={form[id]} onInput={(e) => setForm({ ...form, [id]: e.currentTarget.value })} />
    </Field>
  );
  return (
    <section aria-labelledby="audit-title">
      <h1 id="audit-title">Audit trail</h1>
      <div class="verification" aria-live="polite">
        <h2>Chain verification</h2>
        <ErrorBanner error={verification.error} />
        {verification.value ? (
          <>
            <p class={`state state-${verification.value.state.replace(' ', '-')}`}>
              {verification.value.state}: {verification.value.records} records in {verification.value.chains} chains, {verification.value.digests} digests (checked{' '}
              {verification.value.verifiedAt})
            </p>
            {verification.value.findings.length ? (
              <ul>
                {verification.value.findings.map((f) => (
                  <li key={f}>{f}</li>
                ))}
              </ul>
            ) : null}
          </>
        ) : null}
        <button type="button" onClick={verification.reload}>
          Verify again
        </button>
      </div>
      <form
        class="filters"
        onSubmit={(e) => {
          e.preventDefault();
          setQuery(form);
        }}
      >
        {input('from', 'From', 'datetime-local')}
        {input('to', 'To', 'datetime-local')}
        {input('key', 'Key ID or ARN')}
        {input('principal', 'Principal ARN or access key')}
        {input('eventName', 'Event name')}
        {input('errorCode', 'Error code')}
        <button type="submit">Search</button>
      </form>
      <ErrorBanner error={records.error} />
      <table class="audit">
        <thead>
          <tr>
            <th scope="col">Time</th>
            <th scope="col">Event</th>
            <th scope="col">Principal</th>
            <th scope="col">Key</th>
            <th scope="col">Error</th>
          </tr>
        </thead>
        <tbody>
          {(records.value?.records ?? []).map((r) => [
            <tr key={r.eventID} class="record">
              <td>
                <button type="button" class="link" aria-expanded={open === r.eventID} onClick={() => setOpen(open === r.eventID ? undefined : r.eventID)}>
                  {r.eventTime}
                </button>
              </td>
              <td>{r.eventName}</td>
              <td>{r.userIdentity?.arn ?? r.userIdentity?.accessKeyId ?? r.userIdentity?.type}</td>
              <td class="mono">{r.resources?.[0]?.ARN.split('/').pop()}</td>
              <td>{r.errorCode}</td>
            </tr>,
            open === r.eventID ? (
              <tr key={`${r.eventID}-json`}>
                <td colSpan={5}>
                  <pre class="code">{JSON.stringify(r, null, 2)}</pre>
                </td>
              </tr>
            ) : null,
          ])}
        </tbody>
      </table>
      {records.loading ? <p aria-live="polite">Loading…</p> : null}
    </section>
  );
}
