/** Usage: requests per key per operation per day (a bar chart drawn as SVG) and the monthly report
 *  with AWS list-price estimates, as `p11kms usage --prices` prints it (GET /usage). */
import { useState } from 'preact/hooks';
import { operatorGet } from '../api';
import { ErrorBanner, Field, useAsync } from '../components';

interface DailyCount {
  day: string;
  key: string;
  operation: string;
  requests: number;
}
interface Usage {
  report: {
    month: string;
    keys: { key: string; keySpec?: string; requests: Record<string, number>; monthFraction: number }[];
    keysInExistence: number;
    totalRequests: number;
    estimate?: { currency: string; keyFees: number; requestFees: number; total: number; source: string; asOf: string };
  };
  daily: DailyCount[];
}

export function UsagePage() {
  const [month, setMonth] = useState(new Date().toISOString().slice(0, 7));
  const usage = useAsync(() => operatorGet<Usage>('/usage', { month, prices: 'true' }), [month]);
  const daily = usage.value?.daily ?? [];
  const byDay = new Map<string, number>();
  for (const d of daily) byDay.set(d.day, (byDay.get(d.day) ?? 0) + d.requests);
  const days = [...byDay.entries()].sort();
  const max = Math.max(1, ...days.map(([, n]) => n));
  return (
    <section aria-labelledby="usage-title">
      <h1 id="usage-title">Usage</h1>
      <Field id="usage-month" label="Month">
        <input id="usage-month" type="month" value={month} onInput={(e) => e.currentTarget.value && setMonth(e.currentTarget.value)} />
      </Field>
      <ErrorBanner error={usage.error} />
      <figure>
        <svg class="chart" role="img" aria-label={`Requests per day in ${month}`} viewBox={`0 0 ${Math.max(days.length, 1) * 24} 120`} preserveAspectRatio="none">
          {days.map(([day, n], i) => (
            <rect key={day} x={i * 24 + 2} y={110 - (100 * n) / max} width={20} height={(100 * n) / max}>
              <title>{`${day}: ${n} requests`}</title>
            </rect>
          ))}
        </svg>
        <figcaption>Successful requests per day ({days.reduce((s, [, n]) => s + n, 0)} in all)</figcaption>
      </figure>
      <h2>Per key, operation and day</h2>
      <table>
        <thead>
          <tr>
            <th scope="col">Day</th>
            <th scope="col">Key</th>
            <th scope="col">Operation</th>
            <th scope="col">Requests</th>
          </tr>
        </thead>
        <tbody>
          {daily.map((d) => (
            <tr key={`${d.day}|${d.key}|${d.operation}`}>
              <td>{d.day}</td>
              <td class="mono">{d.key.split('/').pop()}</td>
              <td>{d.operation}</td>
              <td>{d.requests}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {usage.value ? (
        <>
          <h2>Monthly report</h2>
          <p>
            {usage.value.report.keysInExistence} keys in existence, {usage.value.report.totalRequests} requests.
            {usage.value.report.estimate
              ? ` Estimate at AWS list prices (${usage.value.report.estimate.source}, ${usage.value.report.estimate.asOf}): keys ${usage.value.report.estimate.keyFees} + requests ${usage.value.report.estimate.requestFees} = ${usage.value.report.estimate.total} ${usage.value.report.estimate.currency}.`
              : ''}
          </p>
          <pre class="code">{JSON.stringify(usage.value.report, null, 2)}</pre>
        </>
      ) : null}
    </section>
  );
}
