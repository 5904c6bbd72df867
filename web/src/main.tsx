import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import "./styles.css";
import { whenUnauthenticated, getToken } from "./api";
import { PAGES, type PageProps } from "./pages";
import { SignIn } from "./pages/SignIn";
import { navigate, useLocation } from "./router";
import { type Session, resume, signOut } from "./session";
import { Link, Loading } from "./ui";

function App() {
  const [session, setSession] = useState<Session | null>(null);
  const [checking, setChecking] = useState(!!getToken());
  const loc = useLocation();

  useEffect(() => {
    whenUnauthenticated(() => {
      signOut();
      setSession(null);
    });
    if (getToken()) {
      resume()
        .then(setSession, () => signOut())
        .finally(() => setChecking(false));
    }
  }, []);

  if (checking) return <Loading what="Checking your session" />;
  if (!session) {
    return (
      <SignIn
        onSignedIn={(s) => {
          setSession(s);
          if (loc.path === "/" || loc.path === "/signin") navigate("/dashboard", true);
        }}
      />
    );
  }

  const pages = PAGES.filter((p) => (!p.visible || p.visible(session)) && (!p.api || session.routes.has(p.api)));
  const page = pages.find((p) => loc.path === p.path || loc.path.startsWith(`${p.path}/`));
  if (!page) {
    navigate("/dashboard", true);
    return null;
  }
  const props: PageProps = { session, path: loc.path, params: loc.params };
  const Current = page.component;
  let section = "";
  return (
    <div class="shell">
      <a class="skip" href="#main">
        Skip to content
      </a>
      <nav class="sidebar" aria-label="Main">
        <div class="brand">
          <svg viewBox="0 0 32 32" width="28" height="28" aria-hidden="true">
            <rect width="32" height="32" rx="7" fill="#2563eb" />
            <path d="M9 8h14v6l-7 10-7-10z" fill="none" stroke="#fff" stroke-width="2.5" stroke-linejoin="round" />
            <path d="M9 14h14" stroke="#bfdbfe" stroke-width="2.5" />
          </svg>
          <span>Bulkhead</span>
        </div>
        <ul>
          {pages.map((p) => {
            const head = p.section !== section ? p.section : undefined;
            section = p.section;
            return (
              <>
                {head && <li class="nav-section">{head}</li>}
                <li>
                  <Link href={p.path} aria-current={p === page ? "page" : undefined} class="nav-link">
                    <svg viewBox="0 0 24 24" width="18" height="18" aria-hidden="true" class="nav-icon">
                      <path d={p.icon} />
                    </svg>
                    {p.title}
                  </Link>
                </li>
              </>
            );
          })}
        </ul>
        <div class="whoami" aria-label="Signed in as">
          <div class="who-name">{session.name}</div>
          <div class="who-role">
            <span class="cap">{session.role.replace("_", " ")}</span>
            {session.scope ? ` · ${session.scope}` : ""}
          </div>
          <button
            type="button"
            class="btn ghost small"
            onClick={() => {
              signOut();
              setSession(null);
              navigate("/", true);
            }}
          >
            Sign out
          </button>
        </div>
      </nav>
      <main id="main" tabIndex={-1}>
        <Current key={page.path} {...props} />
      </main>
    </div>
  );
}

render(<App />, document.getElementById("app")!);
