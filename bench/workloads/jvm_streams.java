// A JVM batch job built on streams and collectors: epochs of orders grouped,
// summarised and dropped, with idle gaps in which G1 gives memory back.
//
// Build and run (class JvmStreams):
//   javac -d /var/tmp/mgrt5-java bench/workloads/jvm_streams.java
//   java -Xmx2g -XX:+UseG1GC -XX:G1PeriodicGCInterval=2000 -cp /var/tmp/mgrt5-java \
//        JvmStreams EPOCHS EPOCH_S IDLE_S BASE_RECORDS GROWTH
//   e.g. JvmStreams 7 10 6 600000 1.25
//
// Each epoch "loads" orders for EPOCH_S seconds, paced in 100 ms ticks
// (BASE_RECORDS * GROWTH^epoch orders, each an object with a customer and a
// SKU string, a region, a quantity, a price and a small list of tags, built
// from a SplittableRandom(7)), keeping them in an ArrayList.  Then it runs a
// few stream pipelines over them: groupingBy customer with
// summarizingDouble, groupingBy SKU to lists (a second, large structure
// alive with the orders), groupingBy region and tag with counting, and a
// sorted top 1000; it keeps the per-customer summary map of the epoch in a
// history list (the growing result) and drops the orders and the other
// maps.  Then it is idle for IDLE_S seconds (waiting for the next input):
// with -XX:G1PeriodicGCInterval G1 collects while idle and uncommits heap it
// no longer needs.  The curve: teeth that grow epoch by epoch (load, a step
// at the groupings, a drop in the idle gap when G1 shrinks the heap) over a
// slowly rising floor (the history).  With -Xmx above the cgroup's limit a
// large enough epoch is killed by the kernel, not by an OutOfMemoryError.
import java.util.*;
import java.util.stream.*;

class JvmStreams {
    record Order(String customer, String sku, int region, int qty, double price, List<String> tags) {}

    static final String[] TAGS = {"promo", "gift", "express", "bulk", "retail", "wholesale",
        "b2b", "mobile", "web", "store", "return", "preorder"};

    public static void main(String[] args) throws Exception {
        int epochs = Integer.parseInt(args[0]);
        double epochS = Double.parseDouble(args[1]);
        double idleS = Double.parseDouble(args[2]);
        long base = Long.parseLong(args[3]);
        double growth = Double.parseDouble(args[4]);
        SplittableRandom rng = new SplittableRandom(7);
        List<Map<String, DoubleSummaryStatistics>> history = new ArrayList<>();
        long t0 = System.nanoTime();
        double next = 0;
        for (int e = 0; e < epochs; e++) {
            long n = (long) (base * Math.pow(growth, e));
            int ticks = (int) Math.round(epochS * 10);
            List<Order> orders = new ArrayList<>();
            long made = 0;
            double start = next;
            for (int t = 1; t <= ticks; t++) {
                long upto = n * t / ticks;
                for (; made < upto; made++) {
                    int k = 1 + rng.nextInt(3);
                    List<String> tags = new ArrayList<>(k);
                    for (int j = 0; j < k; j++) tags.add(TAGS[rng.nextInt(TAGS.length)]);
                    orders.add(new Order("cust-" + rng.nextInt(400000), "sku-" + rng.nextInt(50000),
                        rng.nextInt(40), 1 + rng.nextInt(9), 1 + rng.nextDouble() * 200, tags));
                }
                sleepUntil(t0, start + t * 0.1);
            }
            Map<String, DoubleSummaryStatistics> byCustomer = orders.stream().collect(
                Collectors.groupingBy(Order::customer, Collectors.summarizingDouble(o -> o.qty() * o.price())));
            Map<String, List<Order>> bySku = orders.stream().collect(Collectors.groupingBy(Order::sku));
            Map<Integer, Map<String, Long>> regionTags = orders.stream()
                .flatMap(o -> o.tags().stream().map(tg -> Map.entry(o.region(), tg)))
                .collect(Collectors.groupingBy(Map.Entry::getKey,
                    Collectors.groupingBy(Map.Entry::getValue, Collectors.counting())));
            List<Order> top = orders.stream()
                .sorted(Comparator.comparingDouble((Order o) -> o.qty() * o.price()).reversed())
                .limit(1000).collect(Collectors.toList());
            long skuMax = bySku.values().stream().mapToLong(List::size).max().orElse(0);
            history.add(byCustomer);
            Runtime rt = Runtime.getRuntime();
            System.out.printf("%.1fs epoch %d: %d orders, %d customers, %d skus (max %d), %d regions, "
                + "top %.0f, heap used %d MiB committed %d MiB%n",
                (System.nanoTime() - t0) / 1e9, e, orders.size(), byCustomer.size(), bySku.size(), skuMax,
                regionTags.size(), top.get(0).qty() * top.get(0).price(),
                (rt.totalMemory() - rt.freeMemory()) >> 20, rt.totalMemory() >> 20);
            orders = null; bySku = null; regionTags = null; top = null;
            next = (System.nanoTime() - t0) / 1e9 + idleS;
            sleepUntil(t0, next);
        }
        long kept = history.stream().mapToLong(Map::size).sum();
        System.out.printf("done: %d epochs, %d summaries kept%n", epochs, kept);
    }

    static void sleepUntil(long t0, double s) throws InterruptedException {
        long left = (long) ((s - (System.nanoTime() - t0) / 1e9) * 1000);
        if (left > 0) Thread.sleep(left);
    }
}
