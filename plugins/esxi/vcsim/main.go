// vcsim for Gatehouse's tests: VMware's vSphere API simulator (govmomi's simulator package, from
// Debian's golang-github-vmware-govmomi-dev) running the standalone ESX model, listening on the
// loopback address given by -listen, serving TLS with its own certificate. It prints one line,
// the SDK URL, once it accepts connections, and runs until it is signalled.
//
// Where the simulator lacks a call or a check that real ESXi has, it is added here (see the
// plugin's README):
//   - HostNetworkSystem.UpdatePortGroup (missing from govmomi 0.24's simulator).
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
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// networkSystem adds UpdatePortGroup to the simulator's HostNetworkSystem.
type networkSystem struct {
	*simulator.HostNetworkSystem
}

// Get gives the property collector the simulator's object (whose first field is the mo type).
func (s *networkSystem) Get() mo.Reference {
	return s.HostNetworkSystem
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
