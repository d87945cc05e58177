/*
 * Stub inbound agent for agentpool's Jenkins-compatible test controller.
 *
 * Why it exists: the real agent.jar (Jenkins remoting) cannot be downloaded on the
 * machines agentpool is tested on, yet the end-to-end tests must start agents exactly
 * as users do: `java -jar agent.jar -url U -secret S -name N -webSocket -workDir W`
 * inside the jenkins/inbound-agent conventions. This stub takes that command line,
 * performs the same WebSocket handshake (GET <url>login, then <url>wsagents/ with the
 * Node-Name, Secret-Key and X-Remoting-Capability headers) and then runs the shell
 * steps the controller sends over a small JSON protocol (docs/jenkins-controller.md).
 * JDK only: java.net.http for HTTP and WebSocket, a tiny JSON reader below.
 */
package agentpool.stub;

import java.io.IOException;
import java.io.InputStreamReader;
import java.io.Reader;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.net.http.WebSocket;
import java.net.http.WebSocketHandshakeException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.CompletionStage;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;

public final class Main {
    /** What a real agent.jar sends: a serialised hudson.remoting.Capability, base64. */
    static final String CAPABILITY = "rO0ABXNyABpodWRzb24ucmVtb3RpbmcuQ2FwYWJpbGl0eQAAAAAAAAABAgABSgAEbWFza3hwAAAAAAAAAf4=";

    /** Flags of agent.jar that take a value; every other "-flag" is tolerated on its own. */
    static final Set<String> VALUE_FLAGS = Set.of(
            "-url", "-secret", "-name", "-workDir", "-internalDir", "-tunnel", "-direct", "-jnlpUrl",
            "-jnlpCredentials", "-proxyCredentials", "-agentLog", "-cert", "-protocols", "-instanceIdentity",
            "-loggingConfig", "-jar-cache", "-credentials", "-secret@");

    private final String url;
    private final String secret;
    private final String name;
    private final Path workDir;
    private final Set<Process> running = ConcurrentHashMap.newKeySet();
    private final Map<String, Process> byId = new ConcurrentHashMap<>();
    private final CountDownLatch closed = new CountDownLatch(1);
    private volatile WebSocket socket;
    private volatile int exitCode = 1;

    Main(String url, String secret, String name, Path workDir) {
        this.url = url;
        this.secret = secret;
        this.name = name;
        this.workDir = workDir;
    }

    public static void main(String[] argv) throws Exception {
        Map<String, String> opts = new LinkedHashMap<>();
        List<String> positional = new ArrayList<>();
        boolean webSocket = false;
        for (int i = 0; i < argv.length; i++) {
            String a = argv[i];
            if (VALUE_FLAGS.contains(a)) {
                if (i + 1 >= argv.length) {
                    die(2, "option " + a + " needs a value");
                }
                opts.put(a, argv[++i]);
            } else if (a.equals("-webSocket")) {
                webSocket = true;
            } else if (a.startsWith("-")) {
                System.err.println("INFO: ignoring option " + a + " (not used by the stub agent)");
            } else {
                positional.add(a);
            }
        }
        if (opts.containsKey("-jnlpUrl")) {
            die(2, "-jnlpUrl is deprecated and cannot be combined with -webSocket; use -url");
        }
        String url = opts.get("-url");
        String secret = opts.getOrDefault("-secret", positional.size() > 0 ? positional.get(0) : null);
        String name = opts.getOrDefault("-name", positional.size() > 1 ? positional.get(1) : null);
        if (url == null || secret == null || name == null) {
            die(2, "usage: java -jar agent.jar -url URL -secret SECRET -name NAME -webSocket [-workDir DIR]");
        }
        if (secret.startsWith("@")) {
            // As real remoting: "-secret @FILE" reads the secret from FILE (kept off the command line).
            try {
                secret = Files.readString(Paths.get(secret.substring(1)), StandardCharsets.UTF_8).trim();
            } catch (IOException e) {
                die(2, "cannot read the secret from " + secret.substring(1) + ": " + e);
            }
        }
        if (!webSocket) {
            die(2, "this stub agent only speaks WebSocket: add -webSocket");
        }
        if (!url.endsWith("/")) {
            url = url + "/";
        }
        Path workDir = Paths.get(opts.getOrDefault("-workDir", System.getProperty("user.dir"))).toAbsolutePath();
        Files.createDirectories(workDir);
        System.exit(new Main(url, secret, name, workDir).run());
    }

    static void die(int code, String message) {
        System.err.println("SEVERE: " + message);
        System.exit(code);
    }

    int run() throws InterruptedException {
        HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(20)).build();
        System.err.println("INFO: Agent discovery: checking " + url + "login");
        try {
            HttpResponse<String> login = http.send(
                    HttpRequest.newBuilder(URI.create(url + "login")).timeout(Duration.ofSeconds(30)).GET().build(),
                    HttpResponse.BodyHandlers.ofString());
            if (login.statusCode() != 200) {
                System.err.println("SEVERE: " + url + "login answered HTTP " + login.statusCode()
                        + ": is this a Jenkins controller?");
                return 1;
            }
        } catch (IOException e) {
            System.err.println("SEVERE: Failed to connect to " + url + "login: " + e);
            return 1;
        }
        String wsUrl = url.replaceFirst("^http", "ws") + "wsagents/";
        System.err.println("INFO: Connecting to " + wsUrl + " as " + name);
        try {
            socket = http.newWebSocketBuilder()
                    .connectTimeout(Duration.ofSeconds(30))
                    .header("Node-Name", name)
                    .header("Secret-Key", secret)
                    .header("X-Remoting-Capability", CAPABILITY)
                    .buildAsync(URI.create(wsUrl), new Listener())
                    .join();
        } catch (CompletionException e) {
            Throwable cause = e.getCause();
            if (cause instanceof WebSocketHandshakeException) {
                HttpResponse<?> response = ((WebSocketHandshakeException) cause).getResponse();
                Object body = response.body();
                System.err.println("SEVERE: The server rejected the connection: HTTP " + response.statusCode()
                        + (body == null ? "" : " " + body));
            } else {
                System.err.println("SEVERE: Failed to connect to " + wsUrl + ": " + cause);
            }
            return 1;
        }
        System.err.println("INFO: Connected");
        Runtime.getRuntime().addShutdownHook(new Thread(() -> running.forEach(p -> {
            p.descendants().forEach(ProcessHandle::destroyForcibly);
            p.destroyForcibly();
        })));
        closed.await();
        return exitCode;
    }

    final class Listener implements WebSocket.Listener {
        private final StringBuilder partial = new StringBuilder();

        @Override
        public CompletionStage<?> onText(WebSocket ws, CharSequence data, boolean last) {
            partial.append(data);
            if (last) {
                String text = partial.toString();
                partial.setLength(0);
                try {
                    Object parsed = new Json(text).value();
                    if (parsed instanceof Map) {
                        handle((Map<?, ?>) parsed);
                    }
                } catch (RuntimeException e) {
                    System.err.println("WARNING: ignoring a malformed message: " + e.getMessage());
                }
            }
            ws.request(1);
            return null;
        }

        @Override
        public CompletionStage<?> onClose(WebSocket ws, int statusCode, String reason) {
            System.err.println("SEVERE: Connection closed by the controller (" + statusCode + " " + reason
                    + "); a real agent would reconnect, this stub exits");
            exitCode = 1;
            closed.countDown();
            return null;
        }

        @Override
        public void onError(WebSocket ws, Throwable error) {
            System.err.println("SEVERE: Connection lost: " + error);
            exitCode = 1;
            closed.countDown();
        }
    }

    void handle(Map<?, ?> message) {
        if ("kill".equals(message.get("type"))) {
            Process process = byId.get(String.valueOf(message.get("id")));
            if (process != null) {
                process.descendants().forEach(ProcessHandle::destroyForcibly);
                process.destroyForcibly();
            }
            return;
        }
        if (!"exec".equals(message.get("type"))) {
            return;
        }
        Thread worker = new Thread(() -> exec(message), "step-" + message.get("id"));
        worker.setDaemon(true);
        worker.start();
    }

    void exec(Map<?, ?> message) {
        String id = String.valueOf(message.get("id"));
        String script = String.valueOf(message.get("script"));
        int code = -1;
        Path scriptFile = null;
        try {
            Path workspace = Paths.get(String.valueOf(message.get("workspace")));
            if (!workspace.isAbsolute()) {
                workspace = workDir.resolve(workspace);
            }
            Files.createDirectories(workspace);
            scriptFile = Files.createTempFile("jenkins", ".sh");
            Files.writeString(scriptFile, script, StandardCharsets.UTF_8);
            List<String> command = new ArrayList<>();
            if (script.startsWith("#!")) {
                String line = script.substring(2).split("\n", 2)[0].trim();
                command.addAll(Arrays.asList(line.split("\\s+")));
            } else {
                command.addAll(List.of("/bin/sh", "-xe"));
            }
            command.add(scriptFile.toString());
            ProcessBuilder builder = new ProcessBuilder(command).directory(workspace.toFile()).redirectErrorStream(true);
            Object env = message.get("env");
            if (env instanceof Map) {
                for (Map.Entry<?, ?> e : ((Map<?, ?>) env).entrySet()) {
                    builder.environment().put(String.valueOf(e.getKey()), String.valueOf(e.getValue()));
                }
            }
            builder.environment().put("WORKSPACE", workspace.toString());
            send(Map.of("type", "started", "id", id, "workspace", workspace.toString(),
                    "command", String.join(" ", command)));
            Process process = builder.start();
            running.add(process);
            byId.put(id, process);
            try (Reader out = new InputStreamReader(process.getInputStream(), StandardCharsets.UTF_8)) {
                char[] buf = new char[8192];
                int n;
                while ((n = out.read(buf)) > 0) {
                    send(Map.of("type", "output", "id", id, "data", new String(buf, 0, n)));
                }
            }
            code = process.waitFor();
            running.remove(process);
            byId.remove(id);
        } catch (IOException | RuntimeException e) {
            send(Map.of("type", "output", "id", id, "data", "ERROR: " + e + "\n"));
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        } finally {
            if (scriptFile != null) {
                try {
                    Files.deleteIfExists(scriptFile);
                } catch (IOException ignored) {
                    // a leftover temp file is harmless
                }
            }
        }
        send(Map.of("type", "exit", "id", id, "code", code));
    }

    /** WebSocket allows one outstanding send at a time: serialise them. */
    synchronized void send(Map<String, Object> message) {
        WebSocket ws = socket;
        if (ws == null) {
            return;
        }
        try {
            CompletableFuture<WebSocket> sent = ws.sendText(Json.write(message), true);
            sent.join();
        } catch (RuntimeException e) {
            System.err.println("WARNING: could not send to the controller: " + e);
        }
    }

    /** Just enough JSON for the protocol: objects, arrays, strings, numbers, booleans, null. */
    static final class Json {
        private final String s;
        private int i;

        Json(String s) {
            this.s = s;
        }

        Object value() {
            skip();
            if (i >= s.length()) {
                throw new IllegalArgumentException("unexpected end of JSON");
            }
            char c = s.charAt(i);
            if (c == '{') {
                Map<String, Object> map = new LinkedHashMap<>();
                i++;
                skip();
                if (peek() == '}') {
                    i++;
                    return map;
                }
                while (true) {
                    skip();
                    String key = string();
                    skip();
                    expect(':');
                    map.put(key, value());
                    skip();
                    if (peek() == ',') {
                        i++;
                    } else {
                        expect('}');
                        return map;
                    }
                }
            }
            if (c == '[') {
                List<Object> list = new ArrayList<>();
                i++;
                skip();
                if (peek() == ']') {
                    i++;
                    return list;
                }
                while (true) {
                    list.add(value());
                    skip();
                    if (peek() == ',') {
                        i++;
                    } else {
                        expect(']');
                        return list;
                    }
                }
            }
            if (c == '"') {
                return string();
            }
            if (s.startsWith("true", i)) {
                i += 4;
                return Boolean.TRUE;
            }
            if (s.startsWith("false", i)) {
                i += 5;
                return Boolean.FALSE;
            }
            if (s.startsWith("null", i)) {
                i += 4;
                return null;
            }
            int start = i;
            while (i < s.length() && "+-0123456789.eE".indexOf(s.charAt(i)) >= 0) {
                i++;
            }
            if (start == i) {
                throw new IllegalArgumentException("unexpected '" + c + "' at " + i);
            }
            String num = s.substring(start, i);
            return num.matches("-?\\d+") ? (Object) Long.parseLong(num) : (Object) Double.parseDouble(num);
        }

        private char peek() {
            return i < s.length() ? s.charAt(i) : '\0';
        }

        private void skip() {
            while (i < s.length() && Character.isWhitespace(s.charAt(i))) {
                i++;
            }
        }

        private void expect(char c) {
            if (peek() != c) {
                throw new IllegalArgumentException("expected '" + c + "' at " + i);
            }
            i++;
        }

        private String string() {
            expect('"');
            StringBuilder out = new StringBuilder();
            while (true) {
                if (i >= s.length()) {
                    throw new IllegalArgumentException("unterminated string");
                }
                char c = s.charAt(i++);
                if (c == '"') {
                    return out.toString();
                }
                if (c != '\\') {
                    out.append(c);
                    continue;
                }
                char e = s.charAt(i++);
                switch (e) {
                    case 'n': out.append('\n'); break;
                    case 't': out.append('\t'); break;
                    case 'r': out.append('\r'); break;
                    case 'b': out.append('\b'); break;
                    case 'f': out.append('\f'); break;
                    case 'u': out.append((char) Integer.parseInt(s.substring(i, i + 4), 16)); i += 4; break;
                    default: out.append(e);
                }
            }
        }

        static String write(Map<String, Object> map) {
            StringBuilder out = new StringBuilder("{");
            for (Map.Entry<String, Object> e : map.entrySet()) {
                if (out.length() > 1) {
                    out.append(',');
                }
                quote(out, e.getKey());
                out.append(':');
                Object v = e.getValue();
                if (v instanceof Number || v instanceof Boolean) {
                    out.append(v);
                } else {
                    quote(out, String.valueOf(v));
                }
            }
            return out.append('}').toString();
        }

        private static void quote(StringBuilder out, String text) {
            out.append('"');
            for (int k = 0; k < text.length(); k++) {
                char c = text.charAt(k);
                switch (c) {
                    case '"': out.append("\\\""); break;
                    case '\\': out.append("\\\\"); break;
                    case '\n': out.append("\\n"); break;
                    case '\r': out.append("\\r"); break;
                    case '\t': out.append("\\t"); break;
                    default:
                        if (c < 0x20) {
                            out.append(String.format("\\u%04x", (int) c));
                        } else {
                            out.append(c);
                        }
                }
            }
            out.append('"');
        }
    }
}
