// vcsim for Gatehouse's tests: VMware's vSphere API simulator (govmomi's simulator package, from
// Debian's golang-github-vmware-govmomi-dev) running the standalone ESX model, listening on the
// loopback address given by -listen, serving TLS with its own certificate. It prints one line,
// the SDK URL, once it accepts connections, and runs until it is signalled.
//
// Where the simulator lacks a call or a check that real ESXi has, it is added here (see the
// plugin's README):
//   - HostNetworkSystem.UpdatePortGroup (missing from govmomi 0.24's simulator);
//   - ReconfigVM_Task refuses a NIC whose standard port group does not exist with
//     InvalidDeviceSpec, as ESXi does (the simulator dereferences a nil network and panics).
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"log"
	"net/url"
	"os"
	"os/signal"
	"syscall"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// networkSystem adds UpdatePortGroup to the simulator's HostNetworkSystem.
type networkSystem struct {
	*simulator.HostNetworkSystem
}

// UpdatePortGroup replaces a standard port group's spec; renaming is not supported (as on ESXi
// through this call, the name stays the key).
func (s *networkSystem) UpdatePortGroup(req *types.UpdatePortGroup) soap.HasFault {
	body := &methods.UpdatePortGroupBody{}
	if req.Portgrp.Name != "" && req.Portgrp.Name != req.PgName {
		body.Fault_ = simulator.Fault("renaming a port group is not supported", &types.InvalidArgument{InvalidProperty: "portgrp.name"})
		return body
	}
	for i := range s.NetworkInfo.Portgroup {
		pg := &s.NetworkInfo.Portgroup[i]
		if pg.Spec.Name != req.PgName {
			continue
		}
		if req.Portgrp.VswitchName != pg.Spec.VswitchName {
			body.Fault_ = simulator.Fault("moving a port group to another vSwitch is not supported", &types.InvalidArgument{InvalidProperty: "portgrp.vswitchName"})
			return body
		}
		spec := req.Portgrp
		spec.Name = req.PgName
		pg.Spec = spec
		pg.ComputedPolicy = spec.Policy
		body.Res = &types.UpdatePortGroupResponse{}
		return body
	}
	body.Fault_ = simulator.Fault("", &types.NotFound{})
	return body
}

// virtualMachine checks NIC backings before the simulator's reconfigure runs.
type virtualMachine struct {
	*simulator.VirtualMachine
}

// ReconfigVMTask fails the task with InvalidDeviceSpec when an added or edited NIC names a
// network that does not exist.
func (vm *virtualMachine) ReconfigVMTask(ctx *simulator.Context, req *types.ReconfigVM_Task) soap.HasFault {
	for i, change := range req.Spec.DeviceChange {
		spec := change.GetVirtualDeviceConfigSpec()
		if spec.Operation == types.VirtualDeviceConfigSpecOperationRemove {
			continue
		}
		card, ok := spec.Device.(types.BaseVirtualEthernetCard)
		if !ok {
			continue
		}
		backing, ok := card.GetVirtualEthernetCard().Backing.(*types.VirtualEthernetCardNetworkBackingInfo)
		if !ok || networkExists(backing.DeviceName) {
			continue
		}
		index := int32(i)
		task := simulator.CreateTask(vm, "reconfigVm", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
			return nil, &types.InvalidDeviceSpec{InvalidVmConfig: types.InvalidVmConfig{Property: "VirtualMachine.config.hardware.device"}, DeviceIndex: index}
		})
		return &methods.ReconfigVM_TaskBody{Res: &types.ReconfigVM_TaskResponse{Returnval: task.Run()}}
	}
	return vm.VirtualMachine.ReconfigVMTask(ctx, req)
}

// networkExists tells whether a network of that name is in the host's datacenter.
func networkExists(name string) bool {
	for _, obj := range simulator.Map.All("Network") {
		if obj.Entity().Name == name {
			return true
		}
	}
	return false
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "loopback address:port to serve on")
	username := flag.String("username", "gatehouse", "user name Login accepts")
	password := flag.String("password", "gatehouse", "password Login accepts")
	vms := flag.Int("vms", 2, "virtual machines in the inventory")
	flag.Parse()

	model := simulator.ESX()
	model.Machine = *vms
	defer model.Remove()
	if err := model.Create(); err != nil {
		log.Fatal(err)
	}
	for _, obj := range simulator.Map.All("HostSystem") {
		ref := obj.(*simulator.HostSystem).ConfigManager.NetworkSystem
		if ns, ok := simulator.Map.Get(*ref).(*simulator.HostNetworkSystem); ok {
			simulator.Map.Put(&networkSystem{ns})
		}
	}
	for _, obj := range simulator.Map.All("VirtualMachine") {
		simulator.Map.Put(&virtualMachine{obj.(*simulator.VirtualMachine)})
	}

	model.Service.Listen = &url.URL{Host: *listen, User: url.UserPassword(*username, *password)}
	model.Service.TLS = new(tls.Config) // httptest fills in its own certificate
	server := model.Service.NewServer()
	defer server.Close()

	u := *server.URL
	u.User = nil
	fmt.Println(u.String())

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
}
