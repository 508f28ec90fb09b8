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
 *   process INDEX PID USED           USED -1: "not available" (as under WDDM)
 *
 * TOTAL, RESERVED and USED are bytes, as nvmlDeviceGetMemoryInfo_v2 gives
 * them (USED excludes RESERVED; the v1 call folds RESERVED into used, as
 * real drivers do).  STATE is one of:
 *   ok     every call answers
 *   v1     nvmlDeviceGetMemoryInfo_v2 is NOT_SUPPORTED (an older driver)
 *   lost   every call on the device fails with NVML_ERROR_GPU_IS_LOST
 *   hang   nvmlDeviceGetMemoryInfo(_v2) blocks for 30 s (a wedged driver)
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
#define NVML_ERROR_INSUFFICIENT_SIZE 7
#define NVML_ERROR_GPU_IS_LOST 15
#define NVML_ERROR_UNKNOWN 999

#define MAX_DEVICES 16
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

struct proc {
	unsigned int device, pid;
	long long used;
};

static struct device devices[MAX_DEVICES];
static struct proc procs[MAX_PROCS];
static int ndevices, nprocs, init_error, initialized;

/* Reread the script: the test changes it while the daemon runs. */
static int load(void)
{
	const char *path = getenv("FAKE_NVML_STATE");
	char line[512];
	FILE *f;

	ndevices = nprocs = init_error = 0;
	if (path == NULL || (f = fopen(path, "re")) == NULL)
		return NVML_ERROR_UNKNOWN;
	while (fgets(line, sizeof(line), f) != NULL) {
		unsigned int index;
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
		if (nprocs < MAX_PROCS && sscanf(line, "process %u %u %lld", &procs[nprocs].device,
						 &procs[nprocs].pid, &procs[nprocs].used) == 3)
			nprocs++;
	}
	fclose(f);
	return NVML_SUCCESS;
}

/* The device behind a handle (index + 1, never NULL), reloaded; or an error. */
static int device(void *handle, struct device **out)
{
	uintptr_t index = (uintptr_t)handle;

	if (!initialized)
		return NVML_ERROR_UNINITIALIZED;
	if (load() != NVML_SUCCESS)
		return NVML_ERROR_UNKNOWN;
	if (index == 0 || index > (uintptr_t)ndevices)
		return NVML_ERROR_INVALID_ARGUMENT;
	*out = &devices[index - 1];
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

	*handle = (void *)(uintptr_t)(index + 1);
	return device(*handle, &d);
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

	if (rc == NVML_SUCCESS) {
		u->gpu = d->util_gpu;
		u->memory = d->util_mem;
	}
	return rc;
}

int nvmlDeviceGetComputeRunningProcesses_v3(void *handle, unsigned int *count, nvmlProcessInfo_t *infos)
{
	struct device *d;
	unsigned int n = 0, index = (unsigned int)((uintptr_t)handle - 1);
	int rc = device(handle, &d), i;

	if (rc != NVML_SUCCESS)
		return rc;
	for (i = 0; i < nprocs; i++)
		if (procs[i].device == index)
			n++;
	if (infos == NULL || *count < n) {
		*count = n;
		return n == 0 ? NVML_SUCCESS : NVML_ERROR_INSUFFICIENT_SIZE;
	}
	*count = 0;
	for (i = 0; i < nprocs; i++) {
		if (procs[i].device != index)
			continue;
		infos[*count].pid = procs[i].pid;
		infos[*count].usedGpuMemory = procs[i].used < 0 ? ~0ULL : (unsigned long long)procs[i].used;
		infos[*count].gpuInstanceId = ~0U;
		infos[*count].computeInstanceId = ~0U;
		(*count)++;
	}
	return NVML_SUCCESS;
}
