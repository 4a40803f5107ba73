/** The p11kms console: sign in, then keys, audit, usage and service pages (hash routes). */
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { type Session, signOut } from './api';
import { AuditPage } from './pages/audit';
import { KeyDetailPage } from './pages/key-detail';
import { KeysPage } from './pages/keys';
import { ServicePage } from './pages/service';
import { SignInPage } from './pages/sign-in';
import { UsagePage } from './pages/usage';

function useHashRoute(): string {
  const [route, setRoute] = useState(window.location.hash.slice(1) || '/keys');
  useEffect(() => {
    const update = () => setRoute(window.location.hash.slice(1) || '/keys');
    window.addEventListener('hashchange', update);
    return () => window.removeEventListener('hashchange', update);
  }, []);
  return route;
}

function App() {
  const [session, setSession] = useState<Session>();
  const route = useHashRoute();
  if (!session) return <SignInPage onSignedIn={setSession} />;
  const keyMatch = /^\/keys\/([^/]+)$/.exec(route);
  const section = route.split('/')[1] ?? 'keys';
  return (
    <>
      <header>
        <span class="brand">p11kms</span>
        <nav aria-label="Main">
          {[
            ['keys', 'Keys'],
            ['audit', 'Audit'],
            ['usage', 'Usage'],
            ['service', 'Service'],
          ].map(([id, label]) => (
            <a key={id} href={`#/${id}`} aria-current={section === id ? 'page' : undefined}>
              {label}
            </a>
          ))}
        </nav>
        <span class="who">
          {session.accessKeyId} · {session.region}
          <button
            type="button"
            onClick={() => {
              signOut();
              setSession(undefined);
              window.location.hash = '';
            }}
          >
            Sign out
          </button>
        </span>
      </header>
      <main>
        {keyMatch ? (
          <KeyDetailPage keyId={decodeURIComponent(keyMatch[1]!)} />
        ) : section === 'audit' ? (
          <AuditPage />
        ) : section === 'usage' ? (
          <UsagePage />
        ) : section === 'service' ? (
          <ServicePage />
        ) : (
          <KeysPage />
        )}
      </main>
    </>
  );
}

render(<App />, document.getElementById('app')!);
