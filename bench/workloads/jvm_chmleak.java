// JVM request registry that leaks under load: a ConcurrentHashMap of in-flight
// requests whose error path forgets to remove its entry.
//
// usage: javac -d /var/tmp/mgrt6-java bench/workloads/jvm_chmleak.java
//        java -Xmx2g -XX:+UseG1GC -cp /var/tmp/mgrt6-java JvmChmLeak \
//             SECONDS RATE0 RATE_STEP LEAK_FRACTION PAYLOAD_BYTES
//   e.g. java -Xmx2g -XX:+UseG1GC -cp /var/tmp/mgrt6-java JvmChmLeak 80 2000 40 0.1 16384
//
// Paced on System.nanoTime in 10 ms ticks, the main thread submits RATE0
// requests a second, RATE_STEP more every second (load climbing), to a pool
// of 4 worker threads.  Each request registers itself in a shared
// ConcurrentHashMap<String, Request> (id -> a request object holding a
// PAYLOAD_BYTES byte[] body, headers strings and timestamps), the worker
// "handles" it (fills and checksums the body) and removes it from the map,
// except on the error path (a seeded SplittableRandom(23) draw below
// LEAK_FRACTION), which returns without removing: those entries stay
// forever.  So the live heap grows with the load (leak = LEAK_FRACTION x
// rate x payload per second, rising) under a large churn of short-lived
// garbage; the resident size follows G1's heap expansions (a staircase)
// up to -Xmx.  Prints the map size and heap use every 5 s.  Nothing is
// written to disk.
import java.util.SplittableRandom;
import java.util.concurrent.*;
import java.util.concurrent.atomic.AtomicLong;

class JvmChmLeak {
    static final class Request {
        final String id; final byte[] body; final String[] headers; final long t0; long t1;
        Request(String id, int n, SplittableRandom r) {
            this.id = id; this.body = new byte[n]; this.t0 = System.nanoTime();
            headers = new String[6];
            for (int i = 0; i < 6; i++) headers[i] = "x-h" + i + ": " + Long.toHexString(r.nextLong());
        }
    }

    public static void main(String[] a) throws Exception {
        double seconds = Double.parseDouble(a[0]);
        double rate0 = Double.parseDouble(a[1]);
        double step = Double.parseDouble(a[2]);
        double leak = Double.parseDouble(a[3]);
        int payload = Integer.parseInt(a[4]);
        ConcurrentHashMap<String, Request> inflight = new ConcurrentHashMap<>();
        ExecutorService pool = Executors.newFixedThreadPool(4);
        SplittableRandom master = new SplittableRandom(23);
        AtomicLong done = new AtomicLong(), errors = new AtomicLong();
        long t0 = System.nanoTime();
        double owed = 0;
        long tick = 0, made = 0, nextLog = 5;
        while (true) {
            long due = t0 + tick * 10_000_000L;
            long now = System.nanoTime();
            if (due > now) Thread.sleep((due - now) / 1_000_000L, (int) ((due - now) % 1_000_000L));
            double t = (due - t0) / 1e9;
            if (t >= seconds) break;
            owed += (rate0 + step * t) * 0.01;
            while (owed >= 1) {
                final SplittableRandom r = master.split();
                final String id = "req-" + Long.toHexString(made) + "-" + Long.toHexString(r.nextLong());
                made++;
                owed -= 1;
                pool.execute(() -> {
                    Request q = new Request(id, payload, r);
                    inflight.put(id, q);
                    long sum = 0;
                    for (int i = 0; i < q.body.length; i += 64) { q.body[i] = (byte) r.nextInt(); sum += q.body[i]; }
                    q.t1 = System.nanoTime() + sum;
                    if (r.nextDouble() < leak) { errors.incrementAndGet(); return; }  // the bug
                    inflight.remove(id);
                    done.incrementAndGet();
                });
            }
            if (t >= nextLog) {
                Runtime rt = Runtime.getRuntime();
                System.out.printf("[JvmChmLeak] %5.1fs rate %.0f/s inflight %d errors %d heap used %d MiB committed %d MiB%n",
                        t, rate0 + step * t, inflight.size(), errors.get(),
                        (rt.totalMemory() - rt.freeMemory()) >> 20, rt.totalMemory() >> 20);
                nextLog += 5;
            }
            tick++;
        }
        pool.shutdown();
        pool.awaitTermination(60, TimeUnit.SECONDS);
        System.out.printf("[JvmChmLeak] done: %d requests, %d leaked entries%n", made, inflight.size());
    }
}
