// Docker HEALTHCHECK: GET /healthz on the service's own port (a real token round trip).
const host = process.env.P11KMS_HOST ?? '0.0.0.0';
const target = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host;
const url = `http://${target}:${process.env.P11KMS_PORT ?? '8080'}/healthz`;
try {
  const res = await fetch(url, { signal: AbortSignal.timeout(2500) });
  process.exit(res.status === 200 ? 0 : 1);
} catch {
  process.exit(1);
}
