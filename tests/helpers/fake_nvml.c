/*
 * fake_nvml: a small libnvidia-ml.so.1 for machines without an NVIDIA GPU.
 *
 * It implements the NVML calls memguard makes (every other symbol is
 * absent, which pynvml reports as NVML_ERROR_FUNCTION_NOT_FOUND), with
 * devices, figures and processes scripted by the test in the file named by
 * $FAKE_NVML_STATE, reread on every call, one item per line:
 *
 *   init ERROR                       nvmlInit fails with that NVML error code
 *   device INDEX TOTAL RESERVED USED UTIL_GPU UTIL_MEM STATE UUID NAME...
 *   mig INDEX SLOT TOTAL RESERVED USED STATE UUID NAME...
 *   process INDEX PID USED           USED -1: "not available" (as under WDDM)
 *   mig-process INDEX SLOT PID USED
 *
 * TOTAL, RESERVED and USED are bytes, as nvmlDeviceGetMemoryInfo_v2 gives
 * them (USED excludes RESERVED; the v1 call folds RESERVED into used, as
 * real drivers do).  STATE is one of:
 *   ok     every call answers
 *   v1     nvmlDeviceGetMemoryInfo_v2 is NOT_SUPPORTED (an older driver)
 *   lost   every call on the device fails with NVML_ERROR_GPU_IS_LOST
 *   hang   nvmlDeviceGetMemoryInfo(_v2) blocks for 30 s (a wedged driver)
 *
 * A "mig" line is a MIG instance in slot SLOT (0-6) of device INDEX, and
 * puts that device in MIG mode.  As on a real A100 or H100: a device in
 * MIG mode has 7 slots (nvmlDeviceGetMaxMigDeviceCount), an empty one is
 * NVML_ERROR_NOT_FOUND, neither the instances nor the device have a
 * utilization (NOT_SUPPORTED), and an instance's processes are its
 * "mig-process" lines.  A device without "mig" lines says MIG is
 * NOT_SUPPORTED, as most GPUs do; a lost device loses its instances too.
 *
 * Build: cc -O2 -Wall -Werror -shared -fPIC -Wl,-soname,libnvidia-ml.so.1 \
 *           -o libnvidia-ml.so.1 fake_nvml.c
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NVML_SUCCESS 0
#define NVML_ERROR_UNINITIALIZED 1
#define NVML_ERROR_INVALID_ARGUMENT 2
#define NVML_ERROR_NOT_SUPPORTED 3
#define NVML_ERROR_NOT_FOUND 6
#define NVML_ERROR_INSUFFICIENT_SIZE 7
#define NVML_ERROR_GPU_IS_LOST 15
#define NVML_ERROR_UNKNOWN 999
#define NVML_DEVICE_MIG_ENABLE 1

#define MAX_DEVICES 16
#define MAX_MIGS 64
#define MIG_SLOTS 7             /* nvidia-smi mig -lgip: at most 7 instances on an A100 or H100 */
#define MAX_PROCS 64

typedef struct {
	unsigned long long total, free, used;
} nvmlMemory_t;

typedef struct {
	unsigned int version;
	unsigned long long total, reserved, free, used;
} nvmlMemory_v2_t;

typedef struct {
	unsigned int gpu, memory;
} nvmlUtilization_t;

typedef struct {
	unsigned int pid;
	unsigned long long usedGpuMemory;
	unsigned int gpuInstanceId, computeInstanceId;
} nvmlProcessInfo_t;

struct device {
	unsigned long long total, reserved, used;
	unsigned int util_gpu, util_mem;
	char state[16], uuid[96], name[96];
};

struct mig {
	unsigned int device, slot;
	struct device d;
};

struct proc {
	unsigned int device;
	int slot;               /* -1: on the device itself */
	unsigned int pid;
	long long used;
};

static struct device devices[MAX_DEVICES];
static struct mig migs[MAX_MIGS];
static struct proc procs[MAX_PROCS];
static int ndevices, nmigs, nprocs, init_error, initialized;

/* The memory figures, state, UUID and name after INDEX (and SLOT) on a line. */
static int figures(const char *rest, struct device *d)
{
	int n = 0;

	if (sscanf(rest, "%llu %llu %llu %15s %95s %n", &d->total, &d->reserved, &d->used, d->state, d->uuid,
		   &n) != 5 || n == 0)
		return 0;
	snprintf(d->name, sizeof(d->name), "%s", rest + n);
	return 1;
}

/* Reread the script: the test changes it while the daemon runs. */
static int load(void)
{
	const char *path = getenv("FAKE_NVML_STATE");
	char line[512];
	FILE *f;

	ndevices = nmigs = nprocs = init_error = 0;
	if (path == NULL || (f = fopen(path, "re")) == NULL)
		return NVML_ERROR_UNKNOWN;
	while (fgets(line, sizeof(line), f) != NULL) {
		struct proc *p = &procs[nprocs];
		unsigned int index, slot;
		int n = 0;

		line[strcspn(line, "\n")] = '\0';
		if (sscanf(line, "init %d", &init_error) == 1)
			continue;
		if (sscanf(line, "device %u %n", &index, &n) == 1 && index == (unsigned)ndevices &&
		    ndevices < MAX_DEVICES) {
			struct device *d = &devices[ndevices];
			int rest = 0;

			if (sscanf(line + n, "%llu %llu %llu %u %u %15s %95s %n", &d->total, &d->reserved, &d->used,
				   &d->util_gpu, &d->util_mem, d->state, d->uuid, &rest) == 7 && rest > 0) {
				snprintf(d->name, sizeof(d->name), "%s", line + n + rest);
				ndevices++;
			}
			continue;
		}
		if (sscanf(line, "mig %u %u %n", &index, &slot, &n) == 2 && n > 0 && slot < MIG_SLOTS &&
		    nmigs < MAX_MIGS) {
			migs[nmigs].device = index;
			migs[nmigs].slot = slot;
			if (figures(line + n, &migs[nmigs].d))
				nmigs++;
			continue;
		}
		if (nprocs >= MAX_PROCS)
			continue;
		p->slot = -1;
		if (sscanf(line, "process %u %u %lld", &p->device, &p->pid, &p->used) == 3 ||
		    sscanf(line, "mig-process %u %d %u %lld", &p->device, &p->slot, &p->pid, &p->used) == 4)
			nprocs++;
	}
	fclose(f);
	return NVML_SUCCESS;
}

/* A handle is the device's index + 1 (never NULL), plus (slot + 1) << 8
 * for a MIG instance of it. */
static void *handle_of(unsigned int index, int slot)
{
	return (void *)(uintptr_t)(index + 1 + ((uintptr_t)(slot + 1) << 8));
}

static unsigned int index_of(void *handle)
{
	return (unsigned int)((uintptr_t)handle & 0xff) - 1;
}

static int slot_of(void *handle)
{
	return (int)((uintptr_t)handle >> 8) - 1;
}

/* The instance in *slot* of device *index*, or NULL. */
static struct mig *mig_in(unsigned int index, int slot)
{
	int i;

	for (i = 0; i < nmigs; i++)
		if (migs[i].device == index && (slot < 0 || migs[i].slot == (unsigned)slot))
			return &migs[i];
	return NULL;
}

/* The device or MIG instance behind a handle, reloaded; or an error. */
static int device(void *handle, struct device **out)
{
	unsigned int index = index_of(handle);
	int slot = slot_of(handle);
	struct mig *m;

	if (!initialized)
		return NVML_ERROR_UNINITIALIZED;
	if (load() != NVML_SUCCESS)
		return NVML_ERROR_UNKNOWN;
	if (handle == NULL || index >= (unsigned)ndevices)
		return NVML_ERROR_INVALID_ARGUMENT;
	*out = &devices[index];
	if (strcmp((*out)->state, "lost") == 0)
		return NVML_ERROR_GPU_IS_LOST;
	if (slot < 0)
		return NVML_SUCCESS;
	if ((m = mig_in(index, slot)) == NULL)
		return NVML_ERROR_INVALID_ARGUMENT;     /* an instance destroyed since */
	*out = &m->d;
	if (strcmp((*out)->state, "lost") == 0)
		return NVML_ERROR_GPU_IS_LOST;
	return NVML_SUCCESS;
}

int nvmlInitWithFlags(unsigned int flags)
{
	(void)flags;
	if (load() != NVML_SUCCESS)
		return NVML_ERROR_UNKNOWN;
	if (init_error != 0)
		return init_error;
	initialized = 1;
	return NVML_SUCCESS;
}

int nvmlInit_v2(void)
{
	return nvmlInitWithFlags(0);
}

int nvmlShutdown(void)
{
	initialized = 0;
	return NVML_SUCCESS;
}

const char *nvmlErrorString(int result)
{
	switch (result) {
	case NVML_SUCCESS: return "Success";
	case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
	case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
	case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
	case NVML_ERROR_NOT_FOUND: return "Not Found";
	case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
	case 9: return "Driver Not Loaded";
	case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
	default: return "Unknown Error";
	}
}

int nvmlSystemGetDriverVersion(char *version, unsigned int length)
{
	snprintf(version, length, "fake-nvml-1");
	return NVML_SUCCESS;
}

int nvmlDeviceGetCount_v2(unsigned int *count)
{
	if (!initialized)
		return NVML_ERROR_UNINITIALIZED;
	if (load() != NVML_SUCCESS)
		return NVML_ERROR_UNKNOWN;
	*count = (unsigned int)ndevices;
	return NVML_SUCCESS;
}

int nvmlDeviceGetHandleByIndex_v2(unsigned int index, void **handle)
{
	struct device *d;

	*handle = handle_of(index, -1);
	return device(*handle, &d);
}

/* A device's MIG mode: NOT_SUPPORTED without "mig" lines. */
static int mig_device(void *handle)
{
	struct device *d;
	int rc = device(handle, &d);

	if (rc != NVML_SUCCESS)
		return rc;
	if (slot_of(handle) >= 0)
		return NVML_ERROR_INVALID_ARGUMENT;
	return mig_in(index_of(handle), -1) != NULL ? NVML_SUCCESS : NVML_ERROR_NOT_SUPPORTED;
}

int nvmlDeviceGetMigMode(void *handle, unsigned int *current, unsigned int *pending)
{
	int rc = mig_device(handle);

	if (rc == NVML_SUCCESS)
		*current = *pending = NVML_DEVICE_MIG_ENABLE;
	return rc;
}

int nvmlDeviceGetMaxMigDeviceCount(void *handle, unsigned int *count)
{
	int rc = mig_device(handle);

	if (rc == NVML_SUCCESS)
		*count = MIG_SLOTS;
	return rc;
}

int nvmlDeviceGetMigDeviceHandleByIndex(void *handle, unsigned int slot, void **mig)
{
	int rc = mig_device(handle);

	if (rc != NVML_SUCCESS)
		return rc;
	if (slot >= MIG_SLOTS)
		return NVML_ERROR_INVALID_ARGUMENT;
	if (mig_in(index_of(handle), (int)slot) == NULL)
		return NVML_ERROR_NOT_FOUND;
	*mig = handle_of(index_of(handle), (int)slot);
	return NVML_SUCCESS;
}

int nvmlDeviceGetName(void *handle, char *name, unsigned int length)
{
	struct device *d;
	int rc = device(handle, &d);

	if (rc == NVML_SUCCESS)
		snprintf(name, length, "%s", d->name);
	return rc;
}

int nvmlDeviceGetUUID(void *handle, char *uuid, unsigned int length)
{
	struct device *d;
	int rc = device(handle, &d);

	if (rc == NVML_SUCCESS)
		snprintf(uuid, length, "%s", d->uuid);
	return rc;
}

static int memory(void *handle, struct device **out)
{
	int rc = device(handle, out);

	if (rc == NVML_SUCCESS && strcmp((*out)->state, "hang") == 0)
		sleep(30);
	return rc;
}

int nvmlDeviceGetMemoryInfo(void *handle, nvmlMemory_t *m)
{
	struct device *d;
	int rc = memory(handle, &d);

	if (rc != NVML_SUCCESS)
		return rc;
	m->total = d->total;
	m->used = d->used + d->reserved;
	m->free = d->total - m->used;
	return NVML_SUCCESS;
}

int nvmlDeviceGetMemoryInfo_v2(void *handle, nvmlMemory_v2_t *m)
{
	struct device *d;
	int rc = memory(handle, &d);

	if (rc != NVML_SUCCESS)
		return rc;
	if (strcmp(d->state, "v1") == 0)
		return NVML_ERROR_NOT_SUPPORTED;
	m->total = d->total;
	m->reserved = d->reserved;
	m->used = d->used;
	m->free = d->total - d->reserved - d->used;
	return NVML_SUCCESS;
}

int nvmlDeviceGetUtilizationRates(void *handle, nvmlUtilization_t *u)
{
	struct device *d;
	int rc = device(handle, &d);

	if (rc != NVML_SUCCESS)
		return rc;
	if (mig_in(index_of(handle), -1) != NULL)
		return NVML_ERROR_NOT_SUPPORTED;
	u->gpu = d->util_gpu;
	u->memory = d->util_mem;
	return NVML_SUCCESS;
}

int nvmlDeviceGetComputeRunningProcesses_v3(void *handle, unsigned int *count, nvmlProcessInfo_t *infos)
{
	struct device *d;
	unsigned int n = 0, index = index_of(handle);
	int rc = device(handle, &d), slot = slot_of(handle), i;

	if (rc != NVML_SUCCESS)
		return rc;
	for (i = 0; i < nprocs; i++)
		if (procs[i].device == index && procs[i].slot == slot)
			n++;
	if (infos == NULL || *count < n) {
		*count = n;
		return n == 0 ? NVML_SUCCESS : NVML_ERROR_INSUFFICIENT_SIZE;
	}
	*count = 0;
	for (i = 0; i < nprocs; i++) {
		if (procs[i].device != index || procs[i].slot != slot)
			continue;
		infos[*count].pid = procs[i].pid;
		infos[*count].usedGpuMemory = procs[i].used < 0 ? ~0ULL : (unsigned long long)procs[i].used;
		infos[*count].gpuInstanceId = ~0U;
		infos[*count].computeInstanceId = ~0U;
		(*count)++;
	}
	return NVML_SUCCESS;
}
