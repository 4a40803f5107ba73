/** Service: version, health, the token and what it can serve, request counts (GET /service). */
import { operatorGet } from '../api';
import { ErrorBanner, useAsync } from '../components';

interface ServiceInfo {
  version: string;
  account: { accountId: string; region: string; partition: string };
  token: { label: string; model: string; manufacturerId: string; serialNumber: string; libraryDescription: string; mechanismCount: number };
  health: { status: string; reason?: string };
  capabilities: { keySpec: string; keyUsage: string; served: boolean; reason?: string }[];
  requests: { operation: string; code: string; count: number }[];
}

export function ServicePage() {
  const info = useAsync(() => operatorGet<ServiceInfo>('/service'), []);
  const s = info.value;
  return (
    <section aria-labelledby="service-title">
      <h1 id="service-title">Service</h1>
      <ErrorBanner error={info.error} />
      {s ? (
        <>
          <dl class="facts">
            {[
              ['Version', s.version],
              ['Account', s.account.accountId],
              ['Region', s.account.region],
              ['Health', s.health.status + (s.health.reason ? ` (${s.health.reason})` : '')],
              ['Token', `${s.token.label} — ${s.token.model}, ${s.token.manufacturerId}, serial ${s.token.serialNumber}`],
              ['PKCS#11 library', s.token.libraryDescription],
              ['Mechanisms', String(s.token.mechanismCount)],
            ].map(([k, v]) => (
              <div key={k}>
                <dt>{k}</dt>
                <dd>{v}</dd>
              </div>
            ))}
          </dl>
          <h2>Capabilities of this token</h2>
          <table>
            <thead>
              <tr>
                <th scope="col">Key spec</th>
                <th scope="col">Usage</th>
                <th scope="col">Served</th>
                <th scope="col">Why not</th>
              </tr>
            </thead>
            <tbody>
              {s.capabilities.map((c) => (
                <tr key={`${c.keySpec}-${c.keyUsage}`}>
                  <td>{c.keySpec}</td>
                  <td>{c.keyUsage}</td>
                  <td>{c.served ? 'yes' : 'no'}</td>
                  <td>{c.reason}</td>
                </tr>
              ))}
            </tbody>
          </table>
          <h2>Requests since start (this process)</h2>
          <table>
            <thead>
              <tr>
                <th scope="col">Operation</th>
                <th scope="col">Outcome</th>
                <th scope="col">Count</th>
              </tr>
            </thead>
            <tbody>
              {s.requests.map((r) => (
                <tr key={`${r.operation}-${r.code}`}>
                  <td>{r.operation}</td>
                  <td>{r.code}</td>
                  <td>{r.count}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </>
      ) : null}
    </section>
  );
}
